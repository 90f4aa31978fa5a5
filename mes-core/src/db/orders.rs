//! `production_orders`: orders accepted from the chain, which the MES then produces.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::production_orders;
use super::{DbConnection, now};

/// Status of an order just taken over from the chain.
pub const STATUS_PLANNED: &str = "planned";

/// A stored production order.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = production_orders)]
pub struct ProductionOrder {
    /// Database id.
    pub id: i64,
    /// The chain's `abs_action_id`: one order per chain action.
    pub chain_order_id: String,
    /// The ERP agent that issued the order (a public key).
    pub issuing_agent: String,
    /// The order's type, as the chain names it.
    pub order_type: String,
    /// The order's description.
    pub description: String,
    /// The order's metadata, as JSON text.
    pub metadata: String,
    /// The chain's timestamp of the order.
    pub chain_timestamp: i64,
    /// The operator decision that accepted it.
    pub decision_id: Option<i64>,
    /// Production status, starting at [`STATUS_PLANNED`].
    pub status: String,
    /// When the order was taken over (UTC).
    pub created_at: NaiveDateTime,
    /// When the order last changed (UTC).
    pub updated_at: NaiveDateTime,
}

/// An order to take over with [`create_from_chain`].
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = production_orders)]
pub struct NewProductionOrder<'a> {
    /// See [`ProductionOrder::chain_order_id`].
    pub chain_order_id: &'a str,
    /// See [`ProductionOrder::issuing_agent`].
    pub issuing_agent: &'a str,
    /// See [`ProductionOrder::order_type`].
    pub order_type: &'a str,
    /// See [`ProductionOrder::description`].
    pub description: &'a str,
    /// See [`ProductionOrder::metadata`].
    pub metadata: &'a str,
    /// See [`ProductionOrder::chain_timestamp`].
    pub chain_timestamp: i64,
    /// See [`ProductionOrder::decision_id`].
    pub decision_id: Option<i64>,
    /// See [`ProductionOrder::status`].
    pub status: &'a str,
}

/// Takes over an order from the chain, once: if an order with the same
/// `chain_order_id` exists, it is returned unchanged, so a repeated accept or a
/// replayed reply cannot duplicate production.
pub fn create_from_chain(
    conn: &mut DbConnection,
    new: &NewProductionOrder<'_>,
) -> QueryResult<ProductionOrder> {
    let at = now();
    let statement = diesel::insert_into(production_orders::table)
        .values((
            new,
            production_orders::created_at.eq(at),
            production_orders::updated_at.eq(at),
        ))
        .on_conflict(production_orders::chain_order_id)
        .do_nothing()
        .returning(production_orders::all_columns);
    let inserted: Option<ProductionOrder> =
        per_backend!(conn, |c| statement.get_result(c).optional())?;
    match inserted {
        Some(order) => Ok(order),
        // The conflict row is visible: it was committed before our insert looked.
        None => get_by_chain_id(conn, new.chain_order_id)?.ok_or(diesel::result::Error::NotFound),
    }
}

/// A page of orders, newest first.
pub fn list(conn: &mut DbConnection, limit: i64, offset: i64) -> QueryResult<Vec<ProductionOrder>> {
    production_orders::table
        .order(production_orders::id.desc())
        .limit(limit)
        .offset(offset)
        .select(ProductionOrder::as_select())
        .load(conn)
}

/// The order taken over from chain action `chain_order_id`, if any.
pub fn get_by_chain_id(
    conn: &mut DbConnection,
    chain_order_id: &str,
) -> QueryResult<Option<ProductionOrder>> {
    production_orders::table
        .filter(production_orders::chain_order_id.eq(chain_order_id))
        .select(ProductionOrder::as_select())
        .first(conn)
        .optional()
}
