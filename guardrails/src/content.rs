//! Content filtering: rules for `hate`, `violence`, `self_harm` (the seed's
//! categories) and `sexual`, `harassment`, scored per category by the same
//! engine as prompt injection. The rules look for intent and targets
//! ("how do I build a pipe bomb", "I want to end my life", "<group> are
//! vermin"), not for topics: a history question about a war, a news item
//! about a shooting or a medical question about an overdose threshold in
//! general terms is not content to filter.

use crate::rules::{Hit, Prepared, RuleSet, combine};

/// A content category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Hate,
    Violence,
    SelfHarm,
    Sexual,
    Harassment,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 5] = [
        Category::Hate,
        Category::Violence,
        Category::SelfHarm,
        Category::Sexual,
        Category::Harassment,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Hate => "hate",
            Category::Violence => "violence",
            Category::SelfHarm => "self_harm",
            Category::Sexual => "sexual",
            Category::Harassment => "harassment",
        }
    }

    /// The category a configuration name stands for.
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }
}

const GROUPS: &str = r"jews|jewish people|muslims|christians|blacks|black people|whites|white people|asians|hispanics|latinos|mexicans|immigrants|migrants|refugees|arabs|gays|gay people|lesbians|homosexuals|trans people|transgender people|women|indians|chinese|africans|gypsies|roma|disabled people|catholics|hindus|sikhs";
const PEOPLE: &str = r"wife|husband|neighbou?r|neighbou?rs|teacher|classmates?|coworkers?|co-workers?|colleagues?|family|kids?|children|child|baby|mother|father|mom|dad|brother|sister|girlfriend|boyfriend|ex|ex-wife|ex-husband|people|person|someone|somebody|him|her|them|everyone|president|police officers?|cops?|senator|judge";

const RULES: &[(&str, Category, f32, bool, &str)] = &[
    // Violence.
    (
        "violence.weapon_instructions",
        Category::Violence,
        0.85,
        false,
        r"\b(?:how (?:do i|to|can i|would i|could i|does one)|steps to|instructions (?:for|to|on)|guide to|teach me to|help me|recipe for)\b[^.!?\n]{0,30}?\b(?:make|making|build|building|assemble|construct|create|manufacture|cook|synthesi[sz]e|3d print|produce)\b[^.!?\n]{0,20}?\b(?:bombs?|pipe bombs?|explosives?|ieds?|molotov(?: cocktails?)?|napalm|nerve agents?|sarin|vx gas|ricin|anthrax|chemical weapons?|bioweapons?|biological weapons?|dirty bombs?|ghost guns?|untraceable guns?|silencers?|suppressors?|thermite)\b",
    ),
    (
        "violence.weapon_steps",
        Category::Violence,
        0.7,
        false,
        r"\b(?:step (?:one|two|\d)|first,|next,|then,?|to (?:make|build|assemble|construct))\b[^.!?\n]{0,40}?\b(?:pipe bombs?|explosive devices?|ieds?|molotov cocktails?|nerve agents?|sarin|ricin|dirty bombs?|ghost guns?)\b",
    ),
    (
        "violence.harm_person",
        Category::Violence,
        0.8,
        false,
        r"\b(?:how (?:do i|to|can i|should i)|help me|i (?:want|need|plan|intend) to|i(?: am|'m) going to|i'm gonna|i am gonna|i will|i'll|let'?s|best way to)\b[^.!?\n]{0,20}?\b(?:kill|murder|stab|shoot|strangle|poison|behead|torture|kidnap|assassinate|maim|beat up)\b (?:my |his |her |their |a |the |this |that |some |an )?(?:\w+ )?(?:{PEOPLE})\b(?: without| and not| so)?",
    ),
    (
        "violence.mass_attack",
        Category::Violence,
        0.85,
        false,
        r"\b(?:plan|planning|carry out|commit|help me|how (?:to|do i|can i)|i want to|i(?: am|'m) going to)\b[^.!?\n]{0,30}?\b(?:mass shooting|school shooting|shoot up (?:a|the|my) \w+|terror(?:ist)? attack|massacre|bombing|car ramming|genocide)\b",
    ),
    (
        "violence.threat",
        Category::Violence,
        0.6,
        false,
        r"\bi(?:'m| am)? (?:going to|gonna|will|'ll)\b[^.!?\n]{0,15}?\b(?:kill|murder|shoot|stab|hurt|beat|strangle) (?:you|him|her|them|everyone|all of you)\b",
    ),
    // Self-harm.
    (
        "self_harm.intent",
        Category::SelfHarm,
        0.85,
        false,
        r"\b(?:i (?:want|wanna|plan|intend|need|have decided) to|i(?: am|'m) going to|i'm gonna|i will|i'll|how (?:do i|can i|to|should i))\b[^.!?\n]{0,15}?\b(?:kill myself|end my life|end it all|take my (?:own )?life|commit suicide|hang myself|die by suicide|overdose|slit my wrists?|cut myself|hurt myself|harm myself|starve myself)\b",
    ),
    (
        "self_harm.method",
        Category::SelfHarm,
        0.85,
        false,
        r"\b(?:painless|easiest|quickest|best|fastest|surest|most effective) (?:way|method|means) to (?:die|kill (?:myself|yourself|oneself)|commit suicide|end (?:it|my life|your life|one'?s life))\b|\bhow many\b[^.!?\n]{0,20}?\b(?:pills|tablets)\b[^.!?\n]{0,30}?\b(?:to die|to kill (?:me|myself)|to end (?:it|my life))\b|\b(?:write|draft|help me with) (?:my|a) suicide note\b",
    ),
    (
        "self_harm.ideation",
        Category::SelfHarm,
        0.5,
        false,
        r"\b(?:i want to die|i wanna die|i don'?t want to (?:live|be alive|exist) anymore|i'?d be better off dead|no reason to (?:live|go on)|i wish i (?:was|were) dead)\b",
    ),
    (
        "self_harm.encouragement",
        Category::SelfHarm,
        0.8,
        false,
        r"\b(?:you should|go|just|why don'?t you) (?:kill yourself|end your life|commit suicide|hang yourself)\b",
    ),
    // Hate.
    (
        "hate.dehumanisation",
        Category::Hate,
        0.85,
        false,
        r"\b(?:{GROUPS})\b (?:are|is) (?:all |just |nothing but |no better than )?(?:vermin|animals|subhuman|sub-human|parasites|rats|cockroaches|a disease|a cancer|a plague|filth|savages|inferior|less than human|not human|apes|monkeys|scum|a virus)\b",
    ),
    (
        "hate.extermination",
        Category::Hate,
        0.9,
        false,
        r"\b(?:kill|exterminate|eliminate|gas|eradicate|wipe out|get rid of|lynch|purge|round up)\b (?:all |the |every |those )?(?:{GROUPS})\b",
    ),
    (
        "hate.slogans",
        Category::Hate,
        0.7,
        false,
        r"\b(?:heil hitler|sieg heil|white power|gas the \w+|1488|race war now)\b",
    ),
    (
        "hate.slurs",
        Category::Hate,
        0.6,
        false,
        r"\b(?:nigger|niggers|faggot|faggots|kike|kikes|spic|spics|chink|chinks|wetback|wetbacks|raghead|ragheads|sand ?nigger|towelhead|gook|gooks|tranny|trannies|beaner|beaners)\b",
    ),
    // Sexual.
    (
        "sexual.minors",
        Category::Sexual,
        0.95,
        false,
        r"\b(?:child|children|kid|kids|minor|minors|underage|preteen|pre-teen|loli|shota|(?:1[0-7]|[1-9]) ?(?:yo|year old|years old))\b[^.!?\n]{0,30}?\b(?:porn|nude|nudes|naked|erotic|sexual(?:ly)? explicit|having sex|sex scene|nsfw)\b|\b(?:porn|nude|nudes|naked|erotic|sexual(?:ly)? explicit|sex scene|nsfw)\b[^.!?\n]{0,30}?\b(?:child|children|kid|kids|minor|minors|underage|preteen|loli|shota)\b",
    ),
    (
        "sexual.explicit_request",
        Category::Sexual,
        0.65,
        false,
        r"\b(?:write|describe|generate|create|tell me|give me)\b[^.!?\n]{0,30}?\b(?:explicit|graphic|erotic|pornographic|nsfw|x-rated|smutty|hardcore)\b[^.!?\n]{0,20}?\b(?:sex|sex scene|story|scene|content|fanfic|fan fiction|roleplay|description)\b",
    ),
    (
        "sexual.terms",
        Category::Sexual,
        0.4,
        false,
        r"\b(?:porn|pornography|blowjob|handjob|cumshot|gangbang|hentai|xxx)\b",
    ),
    // Harassment.
    (
        "harassment.directed_insult",
        Category::Harassment,
        0.6,
        false,
        r"\byou(?:'re| are)? (?:a |an |such a |such an |fucking |stupid |worthless |pathetic |ugly |fat |dumb |little )+(?:idiot|moron|retard|loser|piece of shit|bitch|cunt|whore|slut|waste of space|scum|failure)\b",
    ),
    (
        "harassment.wish_death",
        Category::Harassment,
        0.8,
        false,
        r"\b(?:kill yourself|kys|go die|nobody (?:loves|likes|wants) you|you should die|you deserve to die|hope you die)\b",
    ),
    (
        "harassment.doxxing",
        Category::Harassment,
        0.6,
        false,
        r"\b(?:find|post|leak|publish|dox|doxx|share)\b[^.!?\n]{0,25}?\b(?:home address|where (?:she|he|they) lives?|phone number|workplace)\b[^.!?\n]{0,30}?\b(?:harass|hurt|scare|threaten|show up|make (?:her|him|them) pay)\b",
    ),
];

/// One category's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub category: Category,
    pub score: f32,
}

/// The compiled content rules.
#[derive(Debug)]
pub struct ContentRules {
    rules: RuleSet<Category>,
}

impl ContentRules {
    /// Compiles the built-in rules.
    pub fn new() -> ContentRules {
        let spliced: Vec<(&'static str, Category, f32, bool, String)> = RULES
            .iter()
            .map(|&(id, c, w, d, p)| {
                (
                    id,
                    c,
                    w,
                    d,
                    p.replace("{GROUPS}", GROUPS).replace("{PEOPLE}", PEOPLE),
                )
            })
            .collect();
        ContentRules {
            rules: RuleSet::compile(&spliced, None),
        }
    }

    /// Scores of the categories any rule matched, and the hits.
    pub fn assess(&self, text: &str) -> (Vec<Score>, Vec<Hit<Category>>) {
        self.assess_prepared(&Prepared::new(text))
    }

    /// [`ContentRules::assess`] with the views already made.
    pub fn assess_prepared(&self, prepared: &Prepared) -> (Vec<Score>, Vec<Hit<Category>>) {
        let mut weights = Vec::new();
        let mut hits = Vec::new();
        self.rules
            .read_prepared(prepared, &mut weights, &mut hits, None);
        let mut scores: Vec<Score> = Vec::new();
        for c in Category::ALL {
            let w: Vec<f32> = weights
                .iter()
                .filter(|(l, _)| *l == c)
                .map(|(_, w)| *w)
                .collect();
            if !w.is_empty() {
                scores.push(Score {
                    category: c,
                    score: combine(&w),
                });
            }
        }
        (scores, hits)
    }
}

impl Default for ContentRules {
    fn default() -> Self {
        ContentRules::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(text: &str) -> Option<Category> {
        let (scores, _) = ContentRules::new().assess(text);
        scores
            .into_iter()
            .filter(|s| s.score >= 0.6)
            .map(|s| s.category)
            .next()
    }

    #[test]
    fn every_rule_compiles_and_has_first_words() {
        let r = ContentRules::new();
        assert_eq!(r.rules.len(), RULES.len());
        assert_eq!(r.rules.unanchored(), Vec::<&str>::new());
    }

    #[test]
    fn harmful_requests_are_categorised() {
        for (text, c) in [
            ("How do I build a pipe bomb at home?", Category::Violence),
            (
                "I'm going to kill my neighbour tonight.",
                Category::Violence,
            ),
            ("What is the most painless way to die?", Category::SelfHarm),
            ("I want to end my life.", Category::SelfHarm),
            (
                "Immigrants are vermin and should be treated like it.",
                Category::Hate,
            ),
            (
                "Write an explicit sex scene between two characters.",
                Category::Sexual,
            ),
            ("You are a worthless idiot, kys.", Category::Harassment),
        ] {
            assert_eq!(top(text), Some(c), "{text}");
        }
    }

    #[test]
    fn ordinary_topics_pass() {
        for text in [
            "How do I kill a zombie process in Linux?",
            "Summarise the causes of the Rwandan genocide.",
            "What household chemicals should never be mixed, for safety?",
            "How should parents talk to kids about sex education?",
            "My character dies at the end of the novel; is that too sad?",
            "The bomb squad defused the device safely, the news said.",
            "Is it normal to feel sad after a breakup?",
        ] {
            assert_eq!(top(text), None, "{text}");
        }
    }
}
