//! Production units and the updater hook (the original's API nº 12).
//!
//! Every change of a unit (creation, `PATCH` of status and process name) runs the
//! registered [`ProductionUnitHook`]s inside the change's database transaction: a
//! hook that fails rolls the change back, so a unit is never changed without its
//! announcement. The built-in [`ChainHook`] enqueues the chain messages in
//! `chain_outbox`; the outbox relay delivers them.

use std::fmt;
use std::sync::Arc;

use diesel::Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use mes_core::db::DbConnection;
use mes_core::db::outbox::{self, OutboxRow};
use mes_core::db::units::{self as repo, NewProductionUnit, ProductionUnit};
use mes_core::domain::AgentKey;
use mes_core::report::FlowId;
use serde::{Deserialize, Deserializer, Serialize};

use super::chain;
use super::tokens::TokenProvider;

/// Longest display name, status or process name accepted.
pub const MAX_TEXT_LEN: usize = 200;

/// Why a unit operation failed; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// No unit has this code (or id).
    #[error("production unit {0} does not exist")]
    NotFound(String),
    /// A unit with this code exists already.
    #[error("production unit {0} already exists")]
    AlreadyExists(String),
    /// A field of the body is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The body field, as the API names it (`code`, `Status`, …).
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A hook refused the change; nothing was changed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] DieselError),
}

/// A hook's refusal, which rolls the change back.
#[derive(Debug, thiserror::Error)]
#[error("hook {hook} failed: {reason}")]
pub struct HookError {
    /// The failing hook's [`ProductionUnitHook::name`].
    pub hook: String,
    /// What went wrong (no secrets: it may be logged and shown).
    pub reason: String,
}

impl HookError {
    /// A refusal by `hook`.
    pub fn new(hook: &str, reason: impl fmt::Display) -> HookError {
        HookError {
            hook: hook.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A change of a production unit, as hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct UnitChange<'a> {
    /// The unit before the change; `None` when it was just created.
    pub old: Option<&'a ProductionUnit>,
    /// The unit as stored by the change.
    pub new: &'a ProductionUnit,
}

/// Code that runs with every change of a production unit, inside its transaction.
///
/// Integrators register their own (e.g. to notify another system through an outbox
/// of their own) with [`UnitService::with_hook`]. A hook must only use `conn` for
/// work that belongs to the change: its writes commit or roll back with it. It must
/// not call out to the network: that belongs after the commit, which is what the
/// outbox is for.
pub trait ProductionUnitHook: Send + Sync {
    /// A short name for errors and logs.
    fn name(&self) -> &str;

    /// Runs after the unit was written, before the transaction commits; an error
    /// rolls the change back and is returned to the caller as [`UnitError::Hook`].
    fn on_change(&self, conn: &mut DbConnection, change: UnitChange<'_>) -> Result<(), HookError>;
}

/// Whose key the [`ChainHook`] adds as the unit record's reporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reporter {
    /// The `public_key` of the master token row (`kafka_tokens`), read with each
    /// change; no `add_reporter` while the row or its key is missing.
    #[default]
    MasterToken,
    /// A fixed agent, e.g. the key the MES signs its envelopes with.
    Agent(AgentKey),
    /// No `add_reporter`: the record's owner is already the first reporter of every
    /// property (docs/protocol.md §4).
    None,
}

/// The built-in hook: announces each change to the chain through `chain_outbox`.
///
/// It enqueues, under the unit's ordering key and in this order: the
/// `ProductionUnit` record type, the unit's record, its reporter (once each per
/// unit, see [`chain`]), then, for a change of an existing unit, the property
/// update with the stored status and process name.
#[derive(Debug, Clone, Default)]
pub struct ChainHook {
    reporter: Reporter,
    tokens: TokenProvider,
}

impl ChainHook {
    /// The name in [`HookError::hook`].
    pub const NAME: &'static str = "chain";

    /// A hook that adds `reporter` as the reporter of each unit's record.
    pub fn new(reporter: Reporter) -> ChainHook {
        ChainHook {
            reporter,
            tokens: TokenProvider::default(),
        }
    }

    /// The default hook (reporter: the master token's key), reading the master token
    /// through `tokens`, the provider the rest of the server uses.
    pub fn with_tokens(tokens: TokenProvider) -> ChainHook {
        ChainHook {
            reporter: Reporter::MasterToken,
            tokens,
        }
    }

    fn reporter(&self, conn: &mut DbConnection) -> Result<Option<AgentKey>, HookError> {
        match &self.reporter {
            Reporter::Agent(key) => Ok(Some(key.clone())),
            Reporter::None => Ok(None),
            Reporter::MasterToken => {
                let master = self
                    .tokens
                    .master(conn)
                    .map_err(|e| HookError::new(Self::NAME, e))?;
                let Some(key) = master.and_then(|m| m.public_key) else {
                    return Ok(None);
                };
                match key.parse::<AgentKey>() {
                    Ok(key) => Ok(Some(key)),
                    Err(e) => {
                        // A bad key in the token row must not block production
                        // changes; the owner can still report.
                        tracing::warn!(error = %e, "master token's public_key is not an agent key; no reporter added");
                        Ok(None)
                    }
                }
            }
        }
    }
}

impl ProductionUnitHook for ChainHook {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn on_change(&self, conn: &mut DbConnection, change: UnitChange<'_>) -> Result<(), HookError> {
        let unit = change.new;
        let mut messages = vec![
            chain::unit_record_type(&unit.code),
            chain::unit_record(unit),
        ];
        if let Some(reporter) = self.reporter(conn)? {
            messages.push(chain::unit_reporter(&unit.code, &reporter));
        }
        if change.old.is_some() {
            messages.push(chain::unit_update(unit));
        }
        for message in &messages {
            message
                .enqueue(conn)
                .map_err(|e| HookError::new(Self::NAME, e))?;
        }
        Ok(())
    }
}

/// A production unit as the API shows it, with the original's field names for the
/// fields it had (`Status`, `ProcessName`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// Database id (the original's `productionunit_id`).
    pub id: i64,
    /// The MES's code for the unit, e.g. `PT10`: the chain record id.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Current status.
    #[serde(rename = "Status")]
    pub status: String,
    /// Current process, `null` when none.
    #[serde(rename = "ProcessName")]
    pub process_name: Option<String>,
    /// When the unit was created (UTC).
    pub created_at: chrono::NaiveDateTime,
    /// When the unit last changed (UTC).
    pub updated_at: chrono::NaiveDateTime,
}

impl From<ProductionUnit> for Unit {
    fn from(u: ProductionUnit) -> Unit {
        Unit {
            id: u.id,
            code: u.code,
            name: u.name,
            status: u.status,
            process_name: u.process_name,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Body of `POST /api/ProductionUnit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUnit {
    /// 1–64 ASCII letters, digits, `-` or `.` (it becomes part of day-report ids).
    pub code: String,
    /// Display name.
    pub name: String,
    /// Initial status.
    #[serde(rename = "Status")]
    pub status: String,
    /// Initial process, if any.
    #[serde(rename = "ProcessName", default)]
    pub process_name: Option<String>,
}

/// Body of `PATCH /api/ProductionUnit/<id>`, the original's `{"Status", "ProcessName"}`.
///
/// The original required both keys. Here an absent key leaves the field as it is,
/// and `"ProcessName": null` clears the process; every PATCH is announced to the
/// chain, even one that changes nothing (the original did the same).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitPatch {
    /// New status.
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New process: absent = unchanged, `null` = none.
    #[serde(
        rename = "ProcessName",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub process_name: Option<Option<String>>,
}

/// Tells a key given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn check_text(field: &'static str, value: &str, required: bool) -> Result<(), UnitError> {
    let reason = if required && value.trim().is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > MAX_TEXT_LEN {
        format!("at most {MAX_TEXT_LEN} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(UnitError::Invalid { field, reason })
}

/// Checks a unit code: the rules of day-report flow ids (docs/protocol.md §7).
pub fn check_code(code: &str) -> Result<(), UnitError> {
    let any_day = chrono::NaiveDate::MIN;
    FlowId::new(any_day, code)
        .map(|_| ())
        .map_err(|e| UnitError::Invalid {
            field: "code",
            reason: e.reason,
        })
}

/// Production units with their hooks; cheap to clone and share between requests.
#[derive(Clone)]
pub struct UnitService {
    hooks: Vec<Arc<dyn ProductionUnitHook>>,
}

impl fmt::Debug for UnitService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.hooks.iter().map(|h| h.name()).collect();
        f.debug_struct("UnitService")
            .field("hooks", &names)
            .finish()
    }
}

impl Default for UnitService {
    /// With the built-in [`ChainHook`] (reporter from the master token).
    fn default() -> Self {
        UnitService::new(ChainHook::default())
    }
}

impl UnitService {
    /// A service whose changes run `chain` (normally a [`ChainHook`]) first.
    pub fn new(chain: impl ProductionUnitHook + 'static) -> UnitService {
        UnitService {
            hooks: vec![Arc::new(chain)],
        }
    }

    /// A service without any hook: changes reach no one (tests, tools).
    pub fn without_hooks() -> UnitService {
        UnitService { hooks: Vec::new() }
    }

    /// Adds a hook; hooks run in registration order.
    #[must_use]
    pub fn with_hook(mut self, hook: impl ProductionUnitHook + 'static) -> UnitService {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// The names of the registered hooks, in order.
    pub fn hook_names(&self) -> Vec<&str> {
        self.hooks.iter().map(|h| h.name()).collect()
    }

    fn run_hooks(&self, conn: &mut DbConnection, change: UnitChange<'_>) -> Result<(), UnitError> {
        for hook in &self.hooks {
            hook.on_change(conn, change)?;
        }
        Ok(())
    }

    /// Creates a unit and runs the hooks (the chain hook enqueues its record), in one
    /// transaction.
    pub fn create(&self, conn: &mut DbConnection, new: &NewUnit) -> Result<Unit, UnitError> {
        check_code(&new.code)?;
        check_text("name", &new.name, true)?;
        check_text("Status", &new.status, true)?;
        if let Some(process) = &new.process_name {
            check_text("ProcessName", process, false)?;
        }
        conn.transaction(|conn| {
            let created = repo::create(
                conn,
                &NewProductionUnit {
                    code: &new.code,
                    name: &new.name,
                    status: &new.status,
                    process_name: new.process_name.as_deref(),
                },
            )
            .map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    UnitError::AlreadyExists(new.code.clone())
                }
                e => UnitError::Database(e),
            })?;
            self.run_hooks(
                conn,
                UnitChange {
                    old: None,
                    new: &created,
                },
            )?;
            Ok(created.into())
        })
    }

    /// The unit with this code.
    pub fn get(&self, conn: &mut DbConnection, code: &str) -> Result<Unit, UnitError> {
        repo::get_by_code(conn, code)?
            .map(Unit::from)
            .ok_or_else(|| UnitError::NotFound(code.to_owned()))
    }

    /// The unit with this database id (the original's URLs use ids).
    pub fn get_by_id(&self, conn: &mut DbConnection, id: i64) -> Result<Unit, UnitError> {
        repo::get(conn, id)?
            .map(Unit::from)
            .ok_or_else(|| UnitError::NotFound(id.to_string()))
    }

    /// The unit `id` names: the unit with that code, else the one with that database
    /// id (the original's URLs use ids, the console uses codes).
    pub fn resolve(&self, conn: &mut DbConnection, id: &str) -> Result<Unit, UnitError> {
        let id = id.trim();
        if let Some(unit) = repo::get_by_code(conn, id)? {
            return Ok(unit.into());
        }
        if let Ok(n) = id.parse::<i64>()
            && let Some(unit) = repo::get(conn, n)?
        {
            return Ok(unit.into());
        }
        Err(UnitError::NotFound(id.chars().take(64).collect()))
    }

    /// Every unit, by code.
    pub fn list(&self, conn: &mut DbConnection) -> Result<Vec<Unit>, UnitError> {
        Ok(repo::list(conn)?.into_iter().map(Unit::from).collect())
    }

    /// The unit's newest chain message (record, reporter or update): the rows of its
    /// ordering key are delivered in order, so it is delivered only once every earlier
    /// one is settled, and it says where the unit's chain updates stand.
    pub fn newest_message(
        &self,
        conn: &mut DbConnection,
        code: &str,
    ) -> Result<Option<OutboxRow>, UnitError> {
        Ok(outbox::newest_for_ordering_key(
            conn,
            &chain::unit_ordering_key(code),
        )?)
    }

    /// Changes status and process name and runs the hooks in the same transaction
    /// (the chain hook enqueues the property update); returns the unit as stored.
    ///
    /// Concurrent patches of one unit are serialised by the first statement, a
    /// write that locks the row (and, on SQLite, the database) and returns the old
    /// values, so their outbox rows are in commit order.
    pub fn patch(
        &self,
        conn: &mut DbConnection,
        code: &str,
        patch: &UnitPatch,
    ) -> Result<Unit, UnitError> {
        if let Some(status) = &patch.status {
            check_text("Status", status, true)?;
        }
        if let Some(Some(process)) = &patch.process_name {
            check_text("ProcessName", process, false)?;
        }
        conn.transaction(|conn| {
            let Some(old) = repo::lock_by_code(conn, code)? else {
                return Err(UnitError::NotFound(code.to_owned()));
            };
            let status = patch.status.as_deref().unwrap_or(&old.status);
            let process_name = match &patch.process_name {
                Some(process) => process.as_deref(),
                None => old.process_name.as_deref(),
            };
            let new = repo::update_status_and_process(conn, old.id, status, process_name)?;
            self.run_hooks(
                conn,
                UnitChange {
                    old: Some(&old),
                    new: &new,
                },
            )?;
            Ok(new.into())
        })
    }
}
