//! vendgate: a serial-to-MQTT protocol bridge gateway for vending machines.
//!
//! The modules follow the pipeline of DESIGN.md §6; `docs/ARCHITECTURE.md`
//! walks through them in order.

pub mod broker;
pub mod capture;
pub mod cli;
pub mod codec;
pub mod command;
pub mod config;
pub mod device;
pub mod gateway;
pub mod health;
pub mod interface;
pub mod link;
pub mod mqtt;
pub mod profile;
pub mod queue;
pub mod sim;
pub mod store;
pub mod systemd;
