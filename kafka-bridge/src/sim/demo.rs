//! `--demo N`: a chain with something to look at. Partner requests from random (real)
//! agent keys in every state, and orders from the accepted partners, some of them with
//! an apostrophe in a string, which the original's quote replacement broke on.

use mes_core::domain::{AgentKey, Status};
use mes_core::signing::SigningKey;
use serde_json::{Value, json};

use super::ledger::{Ledger, NewOrder};

const PARTS: [&str; 5] = [
    "steering wheel",
    "brake disc",
    "door panel",
    "gear lever",
    "wheel hub",
];

/// Seeds `n` partner requests (the first accepted, then OPEN, REJECTED, ACCEPTED, …)
/// and `n` orders from the accepted partners (mostly OPEN, some answered), an hour
/// apart, ending now.
pub fn seed(ledger: &mut Ledger, n: usize, now: i64) {
    let mut partners: Vec<AgentKey> = Vec::new();
    for i in 0..n {
        let agent = SigningKey::generate().agent_key();
        let status = match i % 3 {
            0 => Status::Accepted,
            1 => Status::Open,
            _ => Status::Rejected,
        };
        let at = now - hours(2 * n - i);
        if ledger
            .add_partner(agent.clone(), status.clone(), at)
            .is_ok()
            && status == Status::Accepted
        {
            partners.push(agent);
        }
    }
    if partners.is_empty() {
        return;
    }
    for i in 0..n {
        let status = match i % 4 {
            1 => Status::Accepted,
            3 => Status::Rejected,
            _ => Status::Open,
        };
        let order = NewOrder {
            issuing_agent: partners[i % partners.len()].clone(),
            order_type: "dummy_action".to_owned(),
            description: if i % 2 == 0 {
                format!("Demo order {}", i + 1)
            } else {
                "Operator's order: handle with care".to_owned()
            },
            metadata: metadata(i),
            files: Vec::new(),
        };
        // Cannot fail: ids are fresh uuids.
        let _ = ledger.add_order(order, status, now - hours(n - i));
    }
}

fn metadata(i: usize) -> Value {
    let mut m = json!({"Part": PARTS[i % PARTS.len()], "Size": (i % 5) + 1});
    if i % 3 == 1 {
        m["Special_Parameters"] = json!(["Operator's note"]);
    }
    if i % 4 == 2 {
        m["Urgent"] = json!(true);
        m["Drawing"] = Value::Null;
    }
    m
}

fn hours(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 7200) * 3600
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn seeds_partners_and_orders_from_accepted_partners() {
        let key = SigningKey::generate();
        let mes = SigningKey::generate().agent_key();
        let mut ledger = Ledger::new(key, mes.clone(), ["T".to_owned()]);
        seed(&mut ledger, 6, 1_700_000_000);
        let s = ledger.state();
        assert_eq!(s.partners.len(), 6);
        assert_eq!(s.orders.len(), 6);
        for status in [Status::Open, Status::Accepted, Status::Rejected] {
            assert!(s.partners.iter().any(|p| p.status == status), "{status}");
            assert!(s.orders.iter().any(|o| o.status == status), "{status}");
        }
        for o in &s.orders {
            assert!(ledger.is_partner(&o.issuing_agent));
            assert_eq!(o.receiving_agent, mes);
            assert!(o.timestamp <= 1_700_000_000);
            assert_eq!(o.answer_timestamp == 0, o.status == Status::Open);
        }
        let text = serde_json::to_string(&s.orders).unwrap();
        assert!(text.contains("Operator's note"), "{text}");
        assert!(text.contains("steering wheel"));
        seed(&mut ledger, 0, 0);
        assert_eq!(ledger.state().orders.len(), 6);
    }
}
