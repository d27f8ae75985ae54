//! Route policy: the route table, the request pipeline (authentication,
//! limits, plugins, then the handler by route kind), and the traffic
//! policies of proxy routes.

pub mod auth;
pub mod grpc_web;
pub mod pipeline;
pub mod request_id;
pub mod routes;
pub mod traffic;
