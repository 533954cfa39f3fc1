//! The shipper's first word to its holder, one line on its stdout: `ready
//! RUN` (the run is registered), `refused "REASON"` (a live run exists, a
//! bad configuration…) or `unrecorded` (no usable store). After it, stdout
//! is /dev/null: nothing more goes down the handshake pipe.

use super::ShipOptions;
use crate::app::App;
use crate::holder::capture::CaptureDir;
use crate::recording::Recording;
use std::fs::File;
use std::io::Write;

/// Registers the run and tells the holder (one line on stdout): `ready RUN`,
/// `refused "REASON"` (a live run exists, a bad config…) or `unrecorded` (no usable store;
/// the reason is on stderr already). `None`: nothing to ship.
pub(super) fn begin(app: &App, args: &ShipOptions, holder: u32) -> Option<Recording> {
    let said = match Recording::start_for(
        app,
        &args.experiment,
        &args.command,
        &args.tags,
        args.mode,
        holder,
    ) {
        Err(err) => {
            refuse(&format!("{err:#}"));
            return None;
        }
        Ok(recording) => match &recording.run {
            Some(run) => {
                // A resumed run's capture still says how its last session
                // ended: this session has not ended.
                let capture = CaptureDir::new(app.data_dir.root(), &run.run_id);
                let _ = std::fs::remove_file(capture.end());
                let _ = std::fs::remove_file(capture.result());
                say(&format!("ready {}", run.run_id));
                Some(recording)
            }
            None => {
                say("unrecorded");
                None
            }
        },
    };
    // Nothing more goes to the holder's handshake pipe.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    said
}

/// `refused "REASON"`: the reason as a JSON string, so that its lines
/// (a config error's snippet) reach the user as they were.
pub fn refuse(reason: &str) {
    say(&format!("refused {}", serde_json::Value::from(reason)));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}
