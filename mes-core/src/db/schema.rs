// In `diesel print-schema` shape (see `diesel.toml`), restricted to the SQL types that
// PostgreSQL and SQLite share, so that one schema serves both backends.
//
// `table!` does not document the items it generates.
#![allow(missing_docs)]

diesel::table! {
    /// Chain messages waiting for, or done with, delivery by the outbox relay.
    chain_outbox (id) {
        id -> BigInt,
        topic -> Text,
        dedup_key -> Text,
        ordering_key -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        chain_message -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        traceparent -> Nullable<Text>,
        discarded_by -> Nullable<Text>,
        discard_reason -> Nullable<Text>,
        discarded_at -> Nullable<Timestamp>,
        retried_at -> Nullable<Timestamp>,
        purged_at -> Nullable<Timestamp>,
        refused -> Bool,
        idem -> Nullable<Text>,
    }
}

diesel::table! {
    /// The mirror of the chain's partner and order requests (poller scans, LIST replies).
    chain_requests (id) {
        id -> BigInt,
        kind -> Text,
        chain_id -> Text,
        status -> Text,
        issuing_agent -> Text,
        chain_timestamp -> BigInt,
        description -> Text,
        item -> Text,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
        last_scan -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// How far the poller's scans of each kind of request list have got.
    chain_scans (kind) {
        kind -> Text,
        completed_scan -> BigInt,
        completed_at -> Nullable<Timestamp>,
        resume_scan -> BigInt,
        resume_start -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Daily KPIs of a production unit, one row per unit, date and shift.
    day_reports (id) {
        id -> BigInt,
        unit_code -> Text,
        report_date -> Date,
        shift -> Integer,
        planned_busy_time_s -> Nullable<Double>,
        actual_production_time_s -> Nullable<Double>,
        planned_unit_time_s -> Nullable<Double>,
        produced_quantity -> Nullable<Double>,
        good_quantity -> Nullable<Double>,
        failure_count -> Nullable<Integer>,
        repair_time_s -> Nullable<Double>,
        availability -> Nullable<Double>,
        performance -> Nullable<Double>,
        quality -> Nullable<Double>,
        oee -> Nullable<Double>,
        mtbf_s -> Nullable<Double>,
        mttr_s -> Nullable<Double>,
        production_time_s -> Nullable<Double>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Operators' accept/reject decisions and what the chain answered.
    decisions (id) {
        id -> BigInt,
        kind -> Text,
        request_id -> Text,
        response -> Integer,
        operator -> Text,
        correlation_id -> Nullable<Text>,
        outcome -> Text,
        chain_message -> Nullable<Text>,
        chain_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        open_scans -> Integer,
        last_scan -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The MES's identity on the chain; the `Master` row holds the request token.
    kafka_tokens (id) {
        id -> BigInt,
        instance_type -> Text,
        token -> Text,
        public_key -> Nullable<Text>,
        password -> Nullable<Text>,
        record_id -> Nullable<Text>,
        topic -> Nullable<Text>,
        name -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Webhook notifications, one row per event and webhook, until delivered or failed.
    notifications (id) {
        id -> BigInt,
        event_id -> Text,
        kind -> Text,
        url -> Text,
        target -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// People and programs allowed to use the HTTP API, with the hash of their key.
    operators (id) {
        id -> BigInt,
        name -> Text,
        role -> Text,
        key_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Orders accepted from the chain, to be produced.
    production_orders (id) {
        id -> BigInt,
        chain_order_id -> Text,
        issuing_agent -> Text,
        order_type -> Text,
        description -> Text,
        metadata -> Text,
        chain_timestamp -> BigInt,
        decision_id -> Nullable<BigInt>,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// The MES's production units, mirrored on the chain as records.
    production_units (id) {
        id -> BigInt,
        code -> Text,
        name -> Text,
        status -> Text,
        process_name -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Signed-in consoles: the SHA-256 of each session id, whose operator, until when.
    sessions (id) {
        id -> BigInt,
        id_hash -> Text,
        operator_id -> BigInt,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    /// Each unit's targets for its day reports' indicators (local, never on the chain).
    unit_targets (unit_id) {
        unit_id -> BigInt,
        oee -> Double,
        availability -> Nullable<Double>,
        performance -> Nullable<Double>,
        quality -> Nullable<Double>,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(production_orders -> decisions (decision_id));
diesel::joinable!(sessions -> operators (operator_id));
diesel::joinable!(unit_targets -> production_units (unit_id));

diesel::allow_tables_to_appear_in_same_query!(
    chain_outbox,
    chain_requests,
    chain_scans,
    day_reports,
    decisions,
    kafka_tokens,
    notifications,
    operators,
    production_orders,
    production_units,
    sessions,
    unit_targets,
);
