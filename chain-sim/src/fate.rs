//! What the simulated gateway does with one request besides applying it: when it
//! applies it, and whether its reply is published, late, lost or never written. One
//! pure decision per request, from its topic, the id it answers and a random draw, so
//! the Kafka loop only carries it out and unit tests pin every combination.

use std::time::Duration;

use mes_core::codec::{Request, Topic};
use mes_core::domain::RequestId;

use crate::config::{GatewayOptions, Route};

/// What the fate of a request depends on: where it was read and, for an answer, the
/// id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The topic it was read from.
    pub(crate) route: Route,
    /// The partner or order request it answers (`BLK_Part_Ans`/`BLK_Act_Ans` only).
    pub(crate) answers: Option<RequestId>,
    /// The first index of the page it lists (`BLK_Part_Lst`/`BLK_Act_Lst` only).
    pub(crate) list_start: Option<u32>,
}

impl Subject {
    /// The subject of a message read from `route`'s topic. An answer that cannot be
    /// decoded answers nothing: the gateway refuses it, whatever its id.
    pub(crate) fn of(route: Route, payload: &[u8]) -> Subject {
        let answers = match route {
            Route::Chain(topic @ (Topic::PartnerAnswer | Topic::OrderAnswer)) => {
                match Request::decode(topic, payload) {
                    Ok((_, Request::AnswerPartner(body) | Request::AnswerOrder(body))) => {
                        Some(body.id)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let list_start = match route {
            Route::Chain(topic @ (Topic::PartnerList | Topic::OrderList)) => {
                match Request::decode(topic, payload) {
                    Ok((_, Request::ListPartners(page) | Request::ListOrders(page))) => {
                        Some(page.start)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        Subject {
            route,
            answers,
            list_start,
        }
    }
}

/// What becomes of a request: [`Fate::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fate {
    /// Apply the request this long after it arrives (zero: on arrival, in order).
    pub(crate) commit_after: Duration,
    /// What becomes of its reply, once applied.
    pub(crate) reply: ReplyFate,
}

/// What becomes of a reply once its request is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyFate {
    /// Published this long after the request is applied; zero: enqueued at once, in
    /// the order requests were applied.
    Publish(Duration),
    /// Not published: the gateway does not answer this topic.
    Unanswered,
    /// Not published: lost on purpose.
    Lost,
}

impl Fate {
    /// The fate of `subject` under `options`, with every reply otherwise published
    /// `delay` after its request is applied. `draw` is a random number in [0, 1): the
    /// reply is lost when it is below `options.lose_replies`.
    ///
    /// An unanswered topic wins over a lost reply, and a lost reply over a late one;
    /// the commit delay holds answers whatever becomes of their replies.
    pub(crate) fn decide(
        options: &GatewayOptions,
        delay: Duration,
        subject: &Subject,
        draw: f64,
    ) -> Fate {
        let Route::Chain(topic) = subject.route else {
            return Fate {
                commit_after: Duration::ZERO,
                reply: ReplyFate::Publish(delay),
            };
        };
        let commit_after = match topic {
            Topic::PartnerAnswer | Topic::OrderAnswer => options.commit_delay,
            _ => Duration::ZERO,
        };
        let id = subject.answers.as_ref();
        let reply = if !options.answers(topic) {
            ReplyFate::Unanswered
        } else if id.is_some_and(|id| options.lose_reply_for.contains(id))
            || draw < options.lose_replies
        {
            ReplyFate::Lost
        } else {
            let late = id
                .and_then(|id| options.late_replies.get(id))
                .or_else(|| {
                    subject
                        .list_start
                        .and_then(|start| options.late_list_replies.get(&start))
                })
                .copied()
                .unwrap_or_default();
            ReplyFate::Publish(delay + late)
        };
        Fate {
            commit_after,
            reply,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use mes_core::codec::{AnswerBody, Page};
    use mes_core::domain::Answer;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn id(n: u8) -> RequestId {
        format!("{n:032x}").parse().unwrap()
    }

    fn answer(topic: Topic, n: u8) -> Subject {
        Subject {
            route: Route::Chain(topic),
            answers: Some(id(n)),
            list_start: None,
        }
    }

    fn on(topic: Topic) -> Subject {
        Subject {
            route: Route::Chain(topic),
            answers: None,
            list_start: None,
        }
    }

    fn publish(ms: u64) -> Fate {
        Fate {
            commit_after: Duration::ZERO,
            reply: ReplyFate::Publish(Duration::from_millis(ms)),
        }
    }

    #[test]
    fn the_default_gateway_answers_everything_at_once() {
        let o = GatewayOptions::default();
        for topic in Topic::ALL {
            assert_eq!(
                Fate::decide(&o, Duration::ZERO, &on(topic), 0.0),
                publish(0)
            );
        }
        assert_eq!(
            Fate::decide(&o, 7 * MS, &answer(Topic::OrderAnswer, 1), 0.0),
            publish(7)
        );
    }

    #[test]
    fn the_subject_of_an_answer_is_its_request_id() {
        let body = AnswerBody {
            id: id(9),
            response: Answer::Accept,
        };
        for (topic, request) in [
            (Topic::PartnerAnswer, Request::AnswerPartner(body.clone())),
            (Topic::OrderAnswer, Request::AnswerOrder(body)),
        ] {
            let bytes = request.envelope("T", None).to_bytes();
            assert_eq!(Subject::of(Route::Chain(topic), &bytes), answer(topic, 9));
        }
        let list = Request::ListPartners(Page::default())
            .envelope("T", None)
            .to_bytes();
        assert_eq!(
            Subject::of(Route::Chain(Topic::PartnerList), &list),
            Subject {
                list_start: Some(0),
                ..on(Topic::PartnerList)
            }
        );
        let garbage = Subject::of(Route::Chain(Topic::OrderAnswer), b"\xff not json");
        assert_eq!(garbage, on(Topic::OrderAnswer));
        assert_eq!(Subject::of(Route::ErpOrder, b"").answers, None);
    }

    #[test]
    fn unanswered_topics_are_applied_without_a_reply() {
        let o = GatewayOptions {
            answer_topics: Some([Topic::PartnerList, Topic::PartnerAnswer].into()),
            ..GatewayOptions::default()
        };
        let fate = |s: &Subject| Fate::decide(&o, Duration::ZERO, s, 0.5).reply;
        assert_eq!(
            fate(&on(Topic::PartnerList)),
            ReplyFate::Publish(Duration::ZERO)
        );
        assert_eq!(
            fate(&answer(Topic::PartnerAnswer, 1)),
            ReplyFate::Publish(Duration::ZERO)
        );
        assert_eq!(fate(&on(Topic::Record)), ReplyFate::Unanswered);
        assert_eq!(fate(&answer(Topic::OrderAnswer, 1)), ReplyFate::Unanswered);
        // The simulator's ERP topics are not the gateway's: always answered.
        let erp = Subject {
            route: Route::ErpPartner,
            answers: None,
            list_start: None,
        };
        assert_eq!(fate(&erp), ReplyFate::Publish(Duration::ZERO));
    }

    #[test]
    fn a_list_reply_is_late_for_its_page_only() {
        let o = GatewayOptions {
            late_list_replies: BTreeMap::from([(3, 20 * MS)]),
            ..GatewayOptions::default()
        };
        let list = |start| {
            let payload = Request::ListPartners(Page { start, limit: 1 })
                .envelope("t", None)
                .to_bytes();
            Subject::of(Route::Chain(Topic::PartnerList), &payload)
        };
        assert_eq!(list(3).list_start, Some(3));
        let fate = |s: &Subject| Fate::decide(&o, MS, s, 0.5).reply;
        assert_eq!(fate(&list(3)), ReplyFate::Publish(21 * MS));
        assert_eq!(fate(&list(4)), ReplyFate::Publish(MS));
        assert_eq!(fate(&on(Topic::PartnerList)), ReplyFate::Publish(MS));
    }

    #[test]
    fn replies_are_lost_by_draw_or_by_id() {
        let o = GatewayOptions {
            lose_replies: 0.25,
            lose_reply_for: [id(2)].into(),
            ..GatewayOptions::default()
        };
        let fate = |s: &Subject, draw| Fate::decide(&o, Duration::ZERO, s, draw).reply;
        let list = on(Topic::OrderList);
        assert_eq!(fate(&list, 0.0), ReplyFate::Lost);
        assert_eq!(fate(&list, 0.249), ReplyFate::Lost);
        assert_eq!(fate(&list, 0.25), ReplyFate::Publish(Duration::ZERO));
        assert_eq!(fate(&answer(Topic::OrderAnswer, 2), 0.99), ReplyFate::Lost);
        assert_eq!(
            fate(&answer(Topic::PartnerAnswer, 2), 0.99),
            ReplyFate::Lost
        );
        assert_eq!(
            fate(&answer(Topic::PartnerAnswer, 3), 0.99),
            ReplyFate::Publish(Duration::ZERO)
        );

        let never = GatewayOptions::default();
        let always = GatewayOptions {
            lose_replies: 1.0,
            ..GatewayOptions::default()
        };
        for draw in [0.0, 0.5, 0.999_999] {
            let decide = |o| Fate::decide(o, Duration::ZERO, &list, draw).reply;
            assert_eq!(decide(&never), ReplyFate::Publish(Duration::ZERO));
            assert_eq!(decide(&always), ReplyFate::Lost);
        }
    }

    #[test]
    fn the_commit_delay_holds_answers_only() {
        let o = GatewayOptions {
            commit_delay: 300 * MS,
            ..GatewayOptions::default()
        };
        for topic in [Topic::PartnerAnswer, Topic::OrderAnswer] {
            let fate = Fate::decide(&o, 5 * MS, &answer(topic, 1), 0.0);
            assert_eq!(fate.commit_after, 300 * MS);
            assert_eq!(fate.reply, ReplyFate::Publish(5 * MS));
        }
        for topic in [
            Topic::PartnerList,
            Topic::OrderList,
            Topic::RecordType,
            Topic::Record,
        ] {
            assert_eq!(Fate::decide(&o, 5 * MS, &on(topic), 0.0), publish(5));
        }
        // A held answer is held even when its reply is lost.
        let lost = GatewayOptions {
            lose_reply_for: [id(1)].into(),
            ..o
        };
        let fate = Fate::decide(&lost, 5 * MS, &answer(Topic::OrderAnswer, 1), 0.9);
        assert_eq!(fate.commit_after, 300 * MS);
        assert_eq!(fate.reply, ReplyFate::Lost);
    }

    #[test]
    fn a_late_reply_waits_beyond_the_delay_and_loss_wins() {
        let o = GatewayOptions {
            late_replies: [(id(1), 400 * MS), (id(2), 50 * MS)].into(),
            ..GatewayOptions::default()
        };
        let fate = |s: &Subject| Fate::decide(&o, 10 * MS, s, 0.9);
        assert_eq!(fate(&answer(Topic::PartnerAnswer, 1)), publish(410));
        assert_eq!(fate(&answer(Topic::OrderAnswer, 2)), publish(60));
        assert_eq!(fate(&answer(Topic::OrderAnswer, 3)), publish(10));
        assert_eq!(fate(&on(Topic::PartnerList)), publish(10));
        assert_eq!(o.longest_hold(), 400 * MS);

        let lost = GatewayOptions {
            lose_reply_for: [id(1)].into(),
            ..o
        };
        let decided = Fate::decide(&lost, 10 * MS, &answer(Topic::PartnerAnswer, 1), 0.9);
        assert_eq!(decided.reply, ReplyFate::Lost);
    }

    #[test]
    fn options_are_validated() {
        let with = |p| GatewayOptions {
            lose_replies: p,
            ..GatewayOptions::default()
        };
        assert!(with(0.0).validate().is_ok());
        assert!(with(1.0).validate().is_ok());
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
    }
}
