//! Plain values that the command line, the configuration and the features
//! share: what `--format`, `--panel`, `--restart`, `--notify-on` and
//! `--notify` say. They live here, below every layer that reads them, so no
//! layer reaches up into another for a name; with the `cli` feature clap
//! parses them (the agent's command line turns it on).

use serde::{Deserialize, Serialize};

/// How a query prints: text for people, JSON Lines for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// The dashboard's four panels, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Panel {
    Progress,
    Memory,
    Errors,
    Logs,
}

impl Panel {
    const ORDER: [Panel; 4] = [Panel::Progress, Panel::Memory, Panel::Errors, Panel::Logs];

    /// The panel `step` places away in Tab order, wrapping around.
    pub fn next(self, step: isize) -> Panel {
        let at = Panel::ORDER.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Panel::ORDER[(at + step).rem_euclid(Panel::ORDER.len() as isize) as usize]
    }
}

/// When a daemon is started again after its command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

impl RestartPolicy {
    /// As written on the command line (`on-failure`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// What a notification is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[cfg_attr(feature = "cli", value(rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Failed,
    Crashed,
    Lost,
    RestartGaveUp,
    Oom,
    NewErrorGroup,
}

impl NotifyOn {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failed => "failed",
            NotifyOn::Crashed => "crashed",
            NotifyOn::Lost => "lost",
            NotifyOn::RestartGaveUp => "restart_gave_up",
            NotifyOn::Oom => "oom",
            NotifyOn::NewErrorGroup => "new_error_group",
        }
    }
}

/// `--notify TARGET…` and `--notify-on LIST` of one run or daemon: they
/// replace the configuration's targets and triggers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyOverride {
    /// `http(s)://…`: the webhook; `none`: no notifications; anything else:
    /// the command.
    pub targets: Vec<String>,
    pub on: Option<Vec<NotifyOn>>,
}

impl NotifyOverride {
    /// `None` when no flag was given.
    pub fn from_flags(targets: &[String], on: &[NotifyOn]) -> Option<NotifyOverride> {
        (!targets.is_empty() || !on.is_empty()).then(|| NotifyOverride {
            targets: targets.to_vec(),
            on: (!on.is_empty()).then(|| on.to_vec()),
        })
    }
}
