//! order-engine: an event-sourced order engine for trading platforms.
//!
//! See ARCHITECTURE.md for the map. The pure cores (`aggregate`, `order`, `saga`,
//! `account`) never do I/O; `store` and `projections` are the shell around the log.

pub mod account;
pub mod accounts;
pub mod actors;
pub mod aggregate;
pub mod amqp;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod balance;
pub mod clients;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod configsvc;
pub mod controls;
pub mod engine;
pub mod events;
pub mod grpc;
pub mod loadgen;
pub mod market;
pub mod ops;
pub mod order;
pub mod projections;
pub mod saga;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod trading_day;
pub mod wire;
