//! Listeners, the server section and plugins.

use std::collections::HashSet;

use super::*;

pub(super) fn listeners(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(&l.name) {
            found.push((
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        if let Err(e) = listen_address(&l.address) {
            found.push((format!("{at}.address"), e));
        }
        match l.protocol {
            Protocol::Http => {}
            Protocol::Https if l.tls.is_none() => found.push((
                format!("{at}.tls"),
                "an https listener needs tls: {cert_file, key_file}".into(),
            )),
            Protocol::Https => {}
            Protocol::Http3 => {
                if l.tls.is_none() {
                    found.push((
                        format!("{at}.tls"),
                        "an http3 listener needs tls: {cert_file, key_file}".into(),
                    ));
                }
            }
        }
    }
}

pub(super) fn plugins(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    for (i, p) in config.plugins.iter().enumerate() {
        let at = format!("plugins[{i}]");
        if p.name.is_empty() {
            found.push((format!("{at}.name"), "a plugin needs a name".into()));
        } else if !names.insert(&p.name) {
            found.push((
                format!("{at}.name"),
                format!("duplicate plugin name {:?}", p.name),
            ));
        }
        if p.path.is_empty() {
            found.push((
                format!("{at}.path"),
                "a plugin needs the path of its .wasm file".into(),
            ));
        }
        if p.max_memory.0 < 64 * 1024 {
            found.push((
                format!("{at}.max_memory"),
                "at least one WebAssembly page (64KB)".into(),
            ));
        }
        if p.max_cpu_time.get().is_zero() {
            found.push((
                format!("{at}.max_cpu_time"),
                "must be longer than zero".into(),
            ));
        }
    }
}
