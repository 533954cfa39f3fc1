//! Metrics: how the program is doing, beside what it prints.
//!
//! [`MetricsSampler`] reads the wrapped program's whole process tree
//! ([`TreeSampler`], straight from `/proc`) and the host ([`host_sample`])
//! every `monitoring.metrics_interval`; [`Throughput`] adds what the pipeline
//! counts (lines/s, errors, items/s per progress task) and [`ProgressPace`]
//! gives progress updates without a rate one, so that every task with a total
//! has an ETA. Samples travel with the records, through the same sink.

mod host;
mod proc_tree;
mod sampler;
pub mod stall;
mod throughput;

pub use host::{host_sample, HostSample};
pub use proc_tree::{TreeSample, TreeSampler};
pub use sampler::{Deliver, MetricsSampler};
pub use throughput::{ProgressPace, Throughput};
