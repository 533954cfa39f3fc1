//! `ingest`: standard input as a source (`prog 2>&1 | pmon-agent ingest -e x`).
//! Nothing is echoed: the agent is the end of the pipe.

use super::{pump, Tee};
use crate::pipeline::Msg;
use crossbeam_channel::Sender;
use pmon_core::record::StreamKind;
use std::fs::File;
use std::sync::{Arc, Mutex};

/// Reads standard input to its end.
pub fn run(tx: Sender<Msg>, plain_log: Option<File>) {
    let tee = Tee {
        echo: None,
        plain_log: plain_log.map(|f| Arc::new(Mutex::new(f))),
    };
    let kind = StreamKind::Stdin;
    let mut deliver = |chunk: &[u8]| tx.send(Msg::Data(kind, chunk.to_vec())).is_ok();
    pump(std::io::stdin().lock(), tee, &mut deliver, None);
    let _ = tx.send(Msg::Eof(kind));
}
