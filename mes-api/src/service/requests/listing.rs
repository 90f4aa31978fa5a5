//! The chain's partner and order lists as the service reads them: which list, an
//! item's id and status, and the whole list filtered by status, page by page.

use std::future::Future;

use kafka_bridge::bridge::Listing;
use mes_core::codec::Page;
use mes_core::db::decisions;
use mes_core::domain::RequestId;
use serde_json::Value;

/// Partner requests or order requests: the two things an operator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BLK_Part_*`.
    Partner,
    /// `BLK_Act_*`.
    Order,
}

impl Kind {
    /// The `decisions.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Partner => decisions::KIND_PARTNER,
            Kind::Order => decisions::KIND_ORDER,
        }
    }

    /// The kind stored as `decisions.kind` / `chain_requests.kind`.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            decisions::KIND_PARTNER => Some(Kind::Partner),
            decisions::KIND_ORDER => Some(Kind::Order),
            _ => None,
        }
    }

    /// The chain's list of this kind.
    pub fn listing(self) -> Listing {
        match self {
            Kind::Partner => Listing::Partners,
            Kind::Order => Listing::Orders,
        }
    }

    /// The id field of a list item.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Partner => "partner_request_id",
            Kind::Order => "abs_action_id",
        }
    }
}
/// Page size when the whole chain list is read (to filter it, or to find a request).
pub const CHAIN_SCAN_PAGE: u32 = 100;
/// Most chain pages read at once (so at most 5,000 requests are looked at).
pub const CHAIN_SCAN_PAGES: u32 = 50;

/// The id of a chain list item, if it has one that is a valid [`RequestId`]; an item
/// whose id breaks the rule is logged and never stored or announced.
pub fn chain_id(kind: Kind, item: &Value) -> Option<RequestId> {
    let raw = item.get(kind.id_field())?;
    match raw.as_str().map(str::parse::<RequestId>) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            tracing::warn!("ignoring a chain {} with a bad id: {e}", kind.as_str());
            None
        }
        None => {
            tracing::warn!(
                "ignoring a chain {} whose id is not a string",
                kind.as_str()
            );
            None
        }
    }
}

/// Whether a chain list item has status `status`, ignoring case.
pub fn has_status(item: &Value, status: &str) -> bool {
    item.get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case(status))
}

/// Items `[page.start, page.start + page.limit)` of the chain's whole list filtered by
/// `status`: reads the chain's list in pages of [`CHAIN_SCAN_PAGE`] through `fetch`,
/// stopping at a short page or after [`CHAIN_SCAN_PAGES`] pages, and stops early once
/// the page asked for is complete.
pub async fn list_filtered<F, Fut, E>(
    page: Page,
    status: &str,
    mut fetch: F,
) -> Result<Vec<Value>, E>
where
    F: FnMut(Page) -> Fut,
    Fut: Future<Output = Result<Vec<Value>, E>>,
{
    let skip = page.start as usize;
    let want = skip.saturating_add(page.limit as usize);
    let mut matched = Vec::new();
    for n in 0..CHAIN_SCAN_PAGES {
        let items = fetch(Page {
            start: n * CHAIN_SCAN_PAGE,
            limit: CHAIN_SCAN_PAGE,
        })
        .await?;
        let last = items.len() < CHAIN_SCAN_PAGE as usize;
        matched.extend(items.into_iter().filter(|item| has_status(item, status)));
        if last || matched.len() >= want {
            break;
        }
    }
    Ok(matched
        .into_iter()
        .skip(skip)
        .take(page.limit as usize)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::RefCell;

    use serde_json::json;

    use super::*;

    /// A chain list of `n` partners; every third one accepted.
    fn chain(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let status = if i % 3 == 0 { "ACCEPTED" } else { "OPEN" };
                json!({"partner_request_id": format!("p{i}"), "status": status})
            })
            .collect()
    }

    /// Runs [`list_filtered`] over `items`; returns the ids and the pages asked for.
    fn filtered(items: &[Value], page: Page, status: &str) -> (Vec<String>, Vec<Page>) {
        let asked = RefCell::new(Vec::new());
        let result = rocket::async_test(list_filtered(page, status, |p: Page| {
            asked.borrow_mut().push(p);
            let from = (p.start as usize).min(items.len());
            let to = (from + p.limit as usize).min(items.len());
            std::future::ready(Ok::<_, ()>(items[from..to].to_vec()))
        }))
        .unwrap();
        let ids = result
            .iter()
            .map(|i| i["partner_request_id"].as_str().unwrap().to_owned())
            .collect();
        (ids, asked.into_inner())
    }

    fn ids(range: impl Iterator<Item = usize>) -> Vec<String> {
        range.map(|i| format!("p{i}")).collect()
    }

    fn page(start: u32, limit: u32) -> Page {
        Page { start, limit }
    }

    #[test]
    fn the_filter_applies_to_the_whole_list_before_the_page() {
        let items = chain(250);
        let (got, asked) = filtered(&items, page(0, 100), "accepted");
        assert_eq!(got, ids((0..250).step_by(3).take(84)));
        assert_eq!(asked.len(), 3, "pages until the short one: {asked:?}");
        assert_eq!(asked[2], page(200, 100));

        let (got, _) = filtered(&items, page(40, 10), "ACCEPTED");
        assert_eq!(got, ids((0..250).step_by(3).skip(40).take(10)));
        let (got, _) = filtered(&items, page(80, 10), "ACCEPTED");
        assert_eq!(got, ids((240..250).step_by(3)));
        let (got, _) = filtered(&items, page(84, 10), "ACCEPTED");
        assert!(got.is_empty());
    }

    #[test]
    fn reading_stops_once_the_page_is_complete_or_at_the_bound() {
        let items = chain(1000);
        let (got, asked) = filtered(&items, page(0, 10), "ACCEPTED");
        assert_eq!(got.len(), 10);
        assert_eq!(asked.len(), 1);

        let items = vec![json!({"partner_request_id": "x", "status": "OPEN"}); 10_000];
        let (got, asked) = filtered(&items, page(0, 10), "ACCEPTED");
        assert!(got.is_empty());
        assert_eq!(asked.len(), CHAIN_SCAN_PAGES as usize);
    }

    #[test]
    fn chain_ids_are_kept_as_spelled_and_bad_ones_dropped() {
        let item = |id: Value| json!({"abs_action_id": id});
        assert_eq!(
            chain_id(Kind::Order, &item(json!("ABC_def-123")))
                .unwrap()
                .as_str(),
            "ABC_def-123"
        );
        assert!(chain_id(Kind::Order, &item(json!("../reports/daily/run?x=1#"))).is_none());
        assert!(chain_id(Kind::Order, &item(json!(12))).is_none());
        assert!(chain_id(Kind::Partner, &item(json!("abc"))).is_none());
    }

    #[test]
    fn kinds_read_back_from_their_stored_names() {
        for kind in [Kind::Partner, Kind::Order] {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_name("unit"), None);
    }
}
