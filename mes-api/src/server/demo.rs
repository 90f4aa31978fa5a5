//! The embedded demo's start (cargo feature `embedded`): the demo's data in the
//! database, then the mock broker and the simulated chain ([`crate::embedded`]).

use kafka_bridge::bridge::BridgeConfig;
use mes_core::db::{self, operators, tokens};

use super::{DEMO_OPERATOR, DEMO_TOKEN_NAME, DEMO_TOKEN_PREFIX, DEMO_UNITS, database_error};
use crate::config::{ConfigError, Settings};
use crate::db::Db;
use crate::embedded::Embedded;
use crate::error::ApiError;
use crate::service::units::{NewUnit, UnitError, UnitService};

/// Seeds the database with the demo's data (a master token if there is none, the
/// demo units, the demo operator with a new key, which it returns), starts the mock
/// broker and the simulated chain, and points `bridge_config` at them.
pub(super) async fn start(
    settings: &Settings,
    db: &Db,
    bridge_config: &mut BridgeConfig,
) -> Result<(Embedded, String), ConfigError> {
    let seeded = db
        .run(|conn| {
            use diesel::Connection as _;
            conn.transaction(|conn| {
                if let Some(found) = not_demo_data(conn)? {
                    return Ok(Err(found));
                }
                let token = match tokens::master(conn)? {
                    Some(master) => master.token,
                    None => {
                        let token = format!("{DEMO_TOKEN_PREFIX}{}", uuid::Uuid::new_v4().simple());
                        tokens::put(
                            conn,
                            &tokens::NewKafkaToken {
                                instance_type: tokens::MASTER,
                                token: &token,
                                name: Some(DEMO_TOKEN_NAME),
                                ..Default::default()
                            },
                        )?
                        .token
                    }
                };
                seed_units(conn)?;
                let key = operators::new_key();
                operators::put(
                    conn,
                    &operators::NewOperator {
                        name: DEMO_OPERATOR,
                        role: operators::ROLE_OPERATOR,
                        key_hash: &operators::hash_key(&key),
                    },
                )?;
                Ok(Ok((token, key)))
            })
        })
        .await
        .map_err(|e| database_error(e.message))?;
    let (token, key) = seeded.map_err(|found| {
        ConfigError::new(
            "MES_KAFKA_BROKERS",
            format!(
                "is `embedded`, but the database at MES_DATABASE_URL holds {found}: the demo never seeds a database in real use; set MES_KAFKA_BROKERS to the cluster's bootstrap servers, or give the demo a database of its own"
            ),
        )
    })?;
    let started = Embedded::start(&settings.topics(), &token, settings.demo_size).await?;
    bridge_config.kafka.brokers = started.brokers().to_owned();
    // The simulated chain signs its replies: the demo verifies them like a
    // deployment with MES_GATEWAY_KEY_FILE.
    if bridge_config.gateway_key.is_none() {
        bridge_config.gateway_key = started.sim().map(|sim| sim.public_key().clone());
    }
    // The mock cluster has no admin API; `Embedded::start` made the topics.
    bridge_config.create_topics = false;
    Ok((started, key))
}

/// What in the database is not the demo's own (a token or an operator someone put),
/// in words for the one-line error; `None` when everything is the demo's.
fn not_demo_data(conn: &mut db::DbConnection) -> Result<Option<String>, ApiError> {
    let foreign_tokens = tokens::list(conn)?
        .into_iter()
        .filter(|t| {
            t.name.as_deref() != Some(DEMO_TOKEN_NAME) || !t.token.starts_with(DEMO_TOKEN_PREFIX)
        })
        .count();
    if foreign_tokens > 0 {
        return Ok(Some(format!(
            "{foreign_tokens} token(s) the demo did not make"
        )));
    }
    let foreign_operators = operators::list(conn)?
        .into_iter()
        .filter(|o| o.name != DEMO_OPERATOR)
        .count();
    if foreign_operators > 0 {
        return Ok(Some(format!(
            "{foreign_operators} operator(s) the demo did not make"
        )));
    }
    Ok(None)
}

/// Creates the [`DEMO_UNITS`](super::DEMO_UNITS) that do not exist yet (idempotent across restarts);
/// their chain records are enqueued like any unit's.
fn seed_units(conn: &mut db::DbConnection) -> Result<(), ApiError> {
    let units = UnitService::default();
    for (code, name, status, process) in DEMO_UNITS {
        let new = NewUnit {
            code: code.to_owned(),
            name: name.to_owned(),
            status: status.to_owned(),
            process_name: Some(process.to_owned()),
        };
        match units.create(conn, &new) {
            Ok(_) | Err(UnitError::AlreadyExists(_)) => {}
            Err(e) => return Err(ApiError::database(e)),
        }
    }
    Ok(())
}
