//! The daily-report job: a cron schedule in a time zone, run with
//! tokio-cron-scheduler, that enqueues the day reports ([`reports::catch_up`]).
//!
//! Settings (the server reads them as `MES_REPORT_CRON`, `MES_REPORT_TZ`,
//! `MES_REPORT_LOOKBACK_DAYS`): a cron expression with seconds, default
//! `0 30 9 * * *` (09:30:00 every day); an IANA time zone, default `UTC`; a look-back
//! in days, default 7, at most [`reports::MAX_LOOKBACK_DAYS`].
//!
//! What runs when:
//! - **at start-up**, the catch-up: the reports of the `lookback` days before the
//!   most recent run that was due (so a server that was down at 09:30, or started
//!   after it, publishes yesterday's report, and one that was down for days publishes
//!   those days);
//! - **at each run**, the same for the run's day: yesterday's report of every unit,
//!   plus any of the look-back days still missing (e.g. a run that failed because the
//!   database was down, or a report stored late). With a look-back of 0 a run
//!   enqueues only yesterday.
//!
//! Every day is enqueued under its dedup key, so this is exactly-once per unit and
//! day with any number of servers and restarts.
//!
//! Runs are planned one at a time with the time zone's rules for the day of the run
//! (each run is a one-shot job that plans the next), because tokio-cron-scheduler's
//! own cron jobs keep the UTC offset of the moment they were created and would run an
//! hour early or late after a daylight-saving change.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use mes_core::db::Pool;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::reports::{self, DailyRun, ReportError};

/// `plan_next` calls itself from inside the job it plans, so its future is boxed.
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Default cron expression (`MES_REPORT_CRON`): 09:30:00 every day.
pub const DEFAULT_CRON: &str = "0 30 9 * * *";

/// Default time zone (`MES_REPORT_TZ`).
pub const DEFAULT_TIME_ZONE: Tz = Tz::UTC;

/// Why the schedule could not be set up or a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse (six fields, seconds first).
    #[error(
        "invalid cron expression {expr:?}: {reason} (expected six fields with seconds first, e.g. \"0 30 9 * * *\")"
    )]
    InvalidCron {
        /// The expression given.
        expr: String,
        /// The parser's reason.
        reason: String,
    },
    /// The expression parses but matches no time (e.g. 30 February).
    #[error("cron expression {0:?} never runs")]
    NeverRuns(String),
    /// The look-back is longer than [`reports::MAX_LOOKBACK_DAYS`].
    #[error("look-back of {days} days is longer than the maximum of {max}")]
    LookbackTooLong {
        /// Days asked for.
        days: u32,
        /// The maximum.
        max: u32,
    },
    /// tokio-cron-scheduler failed.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// No database connection could be had.
    #[error("database pool: {0}")]
    Pool(String),
    /// The run itself failed.
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl From<JobSchedulerError> for ScheduleError {
    fn from(e: JobSchedulerError) -> Self {
        ScheduleError::Scheduler(e.to_string())
    }
}

/// A validated schedule: when the daily report runs and how far it looks back.
#[derive(Debug, Clone)]
pub struct ReportSchedule {
    expr: String,
    cron: Cron,
    tz: Tz,
    lookback_days: u32,
}

impl ReportSchedule {
    /// Validates the three settings (the time zone is one by its type).
    ///
    /// The expression is parsed exactly as tokio-cron-scheduler parses it (seconds
    /// required; day-of-month and day-of-week must both match when both are given).
    pub fn new(
        cron_expr: &str,
        tz: Tz,
        lookback_days: u32,
    ) -> Result<ReportSchedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(cron_expr)
            .map_err(|e| ScheduleError::InvalidCron {
                expr: cron_expr.chars().take(100).collect(),
                reason: e.to_string(),
            })?;
        if lookback_days > reports::MAX_LOOKBACK_DAYS {
            return Err(ScheduleError::LookbackTooLong {
                days: lookback_days,
                max: reports::MAX_LOOKBACK_DAYS,
            });
        }
        let schedule = ReportSchedule {
            expr: cron_expr.to_owned(),
            cron,
            tz,
            lookback_days,
        };
        if schedule.next_run_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverRuns(cron_expr.to_owned()));
        }
        Ok(schedule)
    }

    /// The defaults: [`DEFAULT_CRON`] in [`DEFAULT_TIME_ZONE`], looking back
    /// [`reports::DEFAULT_LOOKBACK_DAYS`] days.
    pub fn default_schedule() -> Result<ReportSchedule, ScheduleError> {
        ReportSchedule::new(
            DEFAULT_CRON,
            DEFAULT_TIME_ZONE,
            reports::DEFAULT_LOOKBACK_DAYS,
        )
    }

    /// The cron expression as given.
    pub fn cron_expr(&self) -> &str {
        &self.expr
    }

    /// The time zone runs are planned in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Days looked back by the catch-up.
    pub fn lookback_days(&self) -> u32 {
        self.lookback_days
    }

    /// The first run strictly after `after`, in the schedule's time zone.
    pub fn next_run_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
    }

    /// The most recent run at or before `now`, in the schedule's time zone.
    pub fn last_run_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.tz), true)
            .ok()
    }

    /// The day a run reports on: the day before the run's local date.
    pub fn report_date(run: &DateTime<Tz>) -> NaiveDate {
        let day = run.date_naive();
        day.checked_sub_days(Days::new(1)).unwrap_or(day)
    }

    /// The `today` of the start-up [`reports::catch_up`]: the local date of the
    /// most recent run that was due at `now`, if any.
    pub fn catch_up_today(&self, now: DateTime<Utc>) -> Option<NaiveDate> {
        self.last_run_at_or_before(now).map(|run| run.date_naive())
    }

    /// Days a run on `today` enqueues: at least yesterday.
    fn days_per_run(&self) -> u32 {
        self.lookback_days.max(1)
    }
}

/// Runs [`reports::catch_up`] on a pooled connection in `spawn_blocking`.
pub async fn run_blocking(
    pool: Pool,
    today: NaiveDate,
    days: u32,
) -> Result<Vec<DailyRun>, ScheduleError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(|e| ScheduleError::Pool(e.to_string()))?;
        Ok(reports::catch_up(&mut conn, today, days)?)
    })
    .await
    .map_err(|e| ScheduleError::Scheduler(format!("daily-report task: {e}")))?
}

fn log_runs(what: &str, runs: &[DailyRun]) {
    for run in runs {
        if !run.enqueued.is_empty() || !run.invalid_code.is_empty() {
            tracing::info!(
                job = "daily-report",
                what,
                date = %run.date,
                enqueued = run.enqueued.len(),
                already_enqueued = run.already_enqueued.len(),
                no_report = run.no_report.len(),
                invalid_code = run.invalid_code.len(),
                "day reports enqueued"
            );
        }
    }
}

struct State {
    schedule: ReportSchedule,
    pool: Pool,
}

/// Plans the first run after `after` as a one-shot job that, when it fires, plans
/// the next one and then enqueues the reports.
fn plan_next(
    scheduler: JobScheduler,
    state: Arc<State>,
    after: DateTime<Utc>,
) -> BoxFuture<Result<(), ScheduleError>> {
    Box::pin(async move {
        let Some(run_at) = state.schedule.next_run_after(after) else {
            tracing::warn!(job = "daily-report", cron = %state.schedule.expr, "no further run");
            return Ok(());
        };
        let delay = (run_at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let job_state = Arc::clone(&state);
        let job = Job::new_one_shot_async(delay, move |_id, scheduler| {
            let state = Arc::clone(&job_state);
            Box::pin(async move {
                // Plan first, so a failing run never ends the schedule.
                if let Err(e) =
                    plan_next(scheduler, Arc::clone(&state), run_at.with_timezone(&Utc)).await
                {
                    tracing::error!(job = "daily-report", error = %e, "could not plan the next run");
                }
                let today = run_at.date_naive();
                let days = state.schedule.days_per_run();
                match run_blocking(state.pool.clone(), today, days).await {
                    Ok(runs) => log_runs("scheduled", &runs),
                    Err(e) => tracing::error!(
                        job = "daily-report",
                        error = %e,
                        "run failed; the next run retries the missing days"
                    ),
                }
            })
        })?;
        scheduler.add(job).await?;
        tracing::debug!(job = "daily-report", at = %run_at, "next run planned");
        Ok(())
    })
}

/// The running daily-report job. Stop it with [`DailyReportJob::shutdown`].
pub struct DailyReportJob {
    scheduler: JobScheduler,
    caught_up: Option<Vec<DailyRun>>,
}

impl std::fmt::Debug for DailyReportJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailyReportJob")
            .field("caught_up", &self.caught_up)
            .finish_non_exhaustive()
    }
}

impl DailyReportJob {
    /// Runs the start-up catch-up, then plans the runs.
    ///
    /// A failing catch-up (e.g. the database is down) is logged, not fatal: the
    /// next run, or the next start, enqueues the missing days.
    pub async fn start(schedule: ReportSchedule, pool: Pool) -> Result<Self, ScheduleError> {
        let now = Utc::now();
        let caught_up = match schedule.catch_up_today(now) {
            Some(today) if schedule.lookback_days > 0 => {
                match run_blocking(pool.clone(), today, schedule.lookback_days).await {
                    Ok(runs) => {
                        log_runs("catch-up", &runs);
                        Some(runs)
                    }
                    Err(e) => {
                        tracing::error!(job = "daily-report", error = %e, "catch-up failed");
                        None
                    }
                }
            }
            _ => Some(Vec::new()),
        };
        let scheduler = JobScheduler::new().await?;
        let state = Arc::new(State { schedule, pool });
        plan_next(scheduler.clone(), state, now).await?;
        scheduler.start().await?;
        Ok(DailyReportJob {
            scheduler,
            caught_up,
        })
    }

    /// What the start-up catch-up enqueued, day by day; `None` if it failed.
    pub fn caught_up(&self) -> Option<&[DailyRun]> {
        self.caught_up.as_deref()
    }

    /// Stops planning runs; a run in progress finishes in the background.
    pub async fn shutdown(mut self) -> Result<(), ScheduleError> {
        self.scheduler.shutdown().await?;
        Ok(())
    }
}
