//! Listeners: accepting connections on HTTP/1.1, HTTP/2, HTTP/3 and TLS,
//! spreading them over the workers, and shedding load past the bounds.

pub mod http3;
pub mod overload;
pub mod server;
pub mod spread;
pub mod tls;
