//! `--demo N` (alias `--ledger-size N`): a chain with something to look at, or a
//! ledger of a given size for tests and benchmarks. Partner requests from random (real)
//! agent keys in every state, and orders from the accepted partners, some of them with
//! an apostrophe in a string, which the original's quote replacement broke on.

use mes_core::domain::{AgentKey, Status};
use mes_core::signing::SigningKey;
use serde_json::{Value, json};

use crate::ledger::{Ledger, NewOrder};

const PARTS: [&str; 5] = [
    "steering wheel",
    "brake disc",
    "door panel",
    "gear lever",
    "wheel hub",
];

/// Seeds `n` partner requests and `n` orders, every one with its own timestamp, an
/// hour apart and increasing in creation order (the partners first, the last order an
/// hour before `now`), so list pages are stable and tests can rely on them:
///
/// - partner request `i` (from 0) is ACCEPTED when `i % 3 == 0`, OPEN when
///   `i % 3 == 1`, REJECTED when `i % 3 == 2`;
/// - order `i` comes from the accepted partners in turn and is OPEN when `i` is even,
///   ACCEPTED when `i % 4 == 1`, REJECTED when `i % 4 == 3`.
///
/// So any 3 consecutive partner requests hold one of each status, and any 4
/// consecutive orders two OPEN, one ACCEPTED, one REJECTED: with `n = 25`, every page
/// of 10 holds OPEN and ACCEPTED items of both kinds. An answered item was answered a
/// minute after it was created.
pub fn seed(ledger: &mut Ledger, n: usize, now: i64) {
    let mut partners: Vec<AgentKey> = Vec::new();
    for i in 0..n {
        let agent = SigningKey::generate().agent_key();
        let status = match i % 3 {
            0 => Status::Accepted,
            1 => Status::Open,
            _ => Status::Rejected,
        };
        let at = now.saturating_sub(hours(n.saturating_mul(2) - i));
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
        let _ = ledger.add_order(order, status, now.saturating_sub(hours(n - i)));
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
    i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(3600)
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

    #[test]
    fn a_ledger_of_25_has_distinct_increasing_times_and_accepted_items_on_every_page() {
        let key = SigningKey::generate();
        let mes = SigningKey::generate().agent_key();
        let mut ledger = Ledger::new(key, mes, ["T".to_owned()]);
        let now = 1_700_000_000;
        seed(&mut ledger, 25, now);
        let s = ledger.state();
        let partners: Vec<(i64, Status)> = s
            .partners
            .iter()
            .map(|p| (p.timestamp, p.status.clone()))
            .collect();
        let orders: Vec<(i64, Status)> = s
            .orders
            .iter()
            .map(|o| (o.timestamp, o.status.clone()))
            .collect();
        for items in [&partners, &orders] {
            assert_eq!(items.len(), 25);
            assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "{items:?}");
            for page in items.chunks(10) {
                for status in [Status::Open, Status::Accepted] {
                    assert!(page.iter().any(|(_, s)| *s == status), "{page:?}");
                }
            }
        }
        assert!(partners[24].0 < orders[0].0);
        assert!(orders[24].0 < now);
        let open =
            |items: &[(i64, Status)]| items.iter().filter(|(_, s)| *s == Status::Open).count();
        assert_eq!((open(&partners), open(&orders)), (8, 13));
    }
}
