//! The progress bar on stderr while a run goes (hidden when stderr is not a terminal).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fleet::FleetState;
use crate::scenario::Shared;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// What the bar counts.
pub enum Measure {
    /// Finished devices out of the fleet.
    Devices(Arc<FleetState>),
    /// Requests out of a budget.
    Requests(u64),
    /// Elapsed time out of a duration.
    Time(Duration),
}

/// A running progress bar.
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Draw progress of `measure` for the run of `shared`; `visible: false` draws nothing.
    pub fn start(shared: Arc<Shared>, measure: Measure, visible: bool) -> Self {
        let (len, unit) = match &measure {
            Measure::Devices(f) => (u64::from(f.len()), "devices"),
            Measure::Requests(n) => (*n, "requests"),
            Measure::Time(d) => (d.as_secs().max(1), "s"),
        };
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let started = Instant::now();
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = (started, 0u64);
            loop {
                tokio::time::sleep(TICK).await;
                let recorder = &shared.driver.recorder;
                let total = recorder.total();
                let now = Instant::now();
                let rate = (total - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, total);
                b.set_position(match &measure {
                    Measure::Devices(f) => f.finished(),
                    Measure::Requests(_) => total,
                    Measure::Time(_) => started.elapsed().as_secs(),
                });
                b.set_message(format!(
                    "| {total} req, {rate:.0} req/s, {} err",
                    recorder.errors()
                ));
            }
        });
        Progress { bar, task }
    }

    /// Remove the bar.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
