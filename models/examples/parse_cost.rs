use loom_models::chat::{ChatRequest, ChatResponse};
use std::time::Instant;
fn main() {
    let req = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! Can you tell me what the weather is usually like in Lisbon in May?"}],"temperature":0.2,"max_tokens":200}"#;
    let resp = include_bytes!("../../tests/e2e/fixtures/openai_chat.json");
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let r: ChatRequest = serde_json::from_slice(req).unwrap();
        std::hint::black_box(r);
    }
    println!("parse req {:?}", t.elapsed() / n);
    let r: ChatRequest = serde_json::from_slice(req).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec(&r).unwrap());
    }
    println!("ser req {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let r: ChatResponse = serde_json::from_slice(resp).unwrap();
        std::hint::black_box(r);
    }
    println!("parse resp {:?}", t.elapsed() / n);
    let p: ChatResponse = serde_json::from_slice(resp).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec(&p).unwrap());
    }
    println!("ser resp {:?}", t.elapsed() / n);
    #[derive(serde::Deserialize)]
    struct U {
        #[allow(dead_code)]
        usage: Option<loom_models::chat::Usage>,
    }
    let t = Instant::now();
    for _ in 0..n {
        let r: U = serde_json::from_slice(resp).unwrap();
        std::hint::black_box(r);
    }
    println!("usage-only {:?}", t.elapsed() / n);
}
