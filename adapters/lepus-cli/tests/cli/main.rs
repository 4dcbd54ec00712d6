//! The `lepus` binary, run as a user runs it: offline (routing explanations, usage errors, exit
//! codes) and against RabbitMQ (publish, call, tail, dead letters, topology).

mod broker;
mod browser;
mod offline;
