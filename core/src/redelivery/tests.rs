use super::*;
use proptest::prelude::*;

fn fresh() -> DeliveryInfo {
    DeliveryInfo::default()
}

#[test]
fn first_delivery_is_handled() {
    assert_eq!(
        decide(fresh(), 5),
        Redelivery::Handle {
            deliveries: 1,
            redelivered: false
        }
    );
}

#[test]
fn classic_redelivery_is_recounted_then_handled_as_a_redelivery() {
    let redelivered = DeliveryInfo {
        redelivered: true,
        ..fresh()
    };
    assert_eq!(
        decide(redelivered, 5),
        Redelivery::Recount { deliveries: 1 }
    );
    let copy = DeliveryInfo {
        counted: Some(1),
        ..fresh()
    };
    assert_eq!(
        decide(copy, 5),
        Redelivery::Handle {
            deliveries: 2,
            redelivered: true
        }
    );
}

#[test]
fn classic_limit_dead_letters_before_running_the_handler_again() {
    let at_limit = DeliveryInfo {
        counted: Some(4),
        ..fresh()
    };
    assert_eq!(
        decide(at_limit, 5),
        Redelivery::Handle {
            deliveries: 5,
            redelivered: true
        }
    );
    let crashed_at_limit = DeliveryInfo {
        redelivered: true,
        counted: Some(4),
        ..fresh()
    };
    assert_eq!(
        decide(crashed_at_limit, 5),
        Redelivery::DeadLetter { deliveries: 6 }
    );
    // A header over the limit is clamped to limit - 1: it gets one more delivery.
    let over = DeliveryInfo {
        counted: Some(9),
        ..fresh()
    };
    assert_eq!(
        decide(over, 5),
        Redelivery::Handle {
            deliveries: 5,
            redelivered: true
        }
    );
}

#[test]
fn quorum_count_comes_from_the_broker() {
    let second = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(1),
        ..fresh()
    };
    assert_eq!(
        decide(second, 3),
        Redelivery::Handle {
            deliveries: 2,
            redelivered: true
        }
    );
    let fourth = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(3),
        ..fresh()
    };
    assert_eq!(decide(fourth, 3), Redelivery::DeadLetter { deliveries: 4 });
    // A copy given back at a shutdown: the broker counts from zero again, the copy's
    // header carries the deliveries before it.
    let copy = DeliveryInfo {
        redelivered: false,
        quorum_count: Some(0),
        counted: Some(2),
    };
    assert_eq!(
        decide(copy, 3),
        Redelivery::Handle {
            deliveries: 3,
            redelivered: true
        }
    );
    let copy_redelivered = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(1),
        counted: Some(2),
    };
    assert_eq!(
        decide(copy_redelivered, 3),
        Redelivery::DeadLetter { deliveries: 4 }
    );
}

#[test]
fn corrupt_and_extreme_counts_are_defined() {
    assert_eq!(
        decide(fresh(), 0),
        Redelivery::Handle {
            deliveries: 1,
            redelivered: false
        }
    );
    let huge = DeliveryInfo {
        counted: Some(u64::MAX),
        redelivered: true,
        quorum_count: None,
    };
    assert_eq!(
        decide(huge, u32::MAX),
        Redelivery::DeadLetter {
            deliveries: u32::MAX
        }
    );
    let huge_quorum = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(u64::MAX),
        ..fresh()
    };
    assert!(matches!(
        decide(huge_quorum, 10),
        Redelivery::DeadLetter { .. }
    ));
}

/// Simulates a message whose handler crashes the worker on every delivery (classic queue):
/// the handler runs at most `limit` times, then the message is dead-lettered.
fn crash_loop(limit: u32) -> (u32, u32) {
    let mut info = fresh();
    let mut handler_runs = 0;
    for _ in 0..(2 * limit as usize + 4) {
        match decide(info, limit) {
            Redelivery::Handle { .. } => {
                handler_runs += 1;
                // Crash: the broker redelivers the same copy.
                info.redelivered = true;
            }
            Redelivery::Recount { deliveries } => {
                info = DeliveryInfo {
                    redelivered: false,
                    counted: Some(u64::from(deliveries)),
                    quorum_count: None,
                };
            }
            Redelivery::DeadLetter { deliveries } => return (handler_runs, deliveries),
        }
    }
    (handler_runs, 0)
}

#[test]
fn a_crash_loop_ends_in_the_dead_letter_queue_after_limit_runs() {
    assert_eq!(crash_loop(1), (1, 2));
    assert_eq!(crash_loop(5), (5, 6));
}

proptest! {
    #[test]
    fn handler_runs_never_exceed_the_limit(limit in 1u32..50) {
        let (runs, deliveries) = crash_loop(limit);
        prop_assert_eq!(runs, limit);
        prop_assert_eq!(deliveries, limit + 1);
    }

    #[test]
    fn never_panics(redelivered: bool, quorum in proptest::option::of(any::<u64>()), counted in proptest::option::of(any::<u64>()), limit: u32) {
        let d = decide(DeliveryInfo { redelivered, quorum_count: quorum, counted }, limit);
        if let Redelivery::Handle { deliveries, .. } = d {
            prop_assert!(deliveries >= 1 && deliveries <= limit.max(1));
        }
    }
}

#[test]
fn a_delivery_given_back_unstarted_is_not_counted() {
    // First delivery, given back at a shutdown: the copy says 0 deliveries before it, and
    // arrives as a first delivery again.
    assert_eq!(earlier_deliveries(fresh()), 0);
    let copy = DeliveryInfo {
        counted: Some(earlier_deliveries(fresh()) as u64),
        ..fresh()
    };
    assert_eq!(
        decide(copy, 1),
        Redelivery::Handle {
            deliveries: 1,
            redelivered: false
        }
    );
    // A classic redelivery (its earlier delivery never finished) keeps that delivery.
    let redelivered = DeliveryInfo {
        redelivered: true,
        counted: Some(3),
        ..fresh()
    };
    assert_eq!(earlier_deliveries(redelivered), 4);
    // A quorum redelivery: the broker's count and the copy's header add up.
    let quorum = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(2),
        counted: Some(1),
    };
    assert_eq!(earlier_deliveries(quorum), 3);
    let corrupt = DeliveryInfo {
        redelivered: true,
        quorum_count: Some(u64::MAX),
        counted: Some(u64::MAX),
    };
    assert_eq!(earlier_deliveries(corrupt), u32::MAX);
}

proptest! {
    /// However often a message is given back unstarted, its count does not grow.
    #[test]
    fn giving_back_is_idempotent(counted in 0u64..1_000, quorum in proptest::option::of(0u64..1_000), redelivered: bool) {
        let info = DeliveryInfo { redelivered, quorum_count: quorum, counted: Some(counted) };
        let earlier = u64::from(earlier_deliveries(info));
        let copy = DeliveryInfo { counted: Some(earlier), ..DeliveryInfo::default() };
        prop_assert_eq!(u64::from(earlier_deliveries(copy)), earlier);
        let limit = u32::try_from(earlier + 1).unwrap();
        let handled = matches!(decide(copy, limit), Redelivery::Handle { .. });
        prop_assert!(handled, "the copy's own delivery fits a limit one above the earlier ones");
    }
}

/// A count header is untrusted input: alone, it never dead-letters a message.
#[test]
fn a_count_header_alone_never_dead_letters() {
    let info = |redelivered, quorum_count, counted| DeliveryInfo {
        redelivered,
        quorum_count,
        counted,
    };
    let handle = |deliveries| Redelivery::Handle {
        deliveries,
        redelivered: true,
    };
    let dead = |deliveries| Redelivery::DeadLetter { deliveries };
    let cases: &[(DeliveryInfo, u32, Redelivery)] = &[
        // A third-party message claiming 1000 deliveries: handled, as the last one allowed.
        (info(false, None, Some(1000)), 10, handle(10)),
        (info(false, None, Some(10)), 10, handle(10)),
        (info(false, None, Some(9)), 10, handle(10)),
        (info(false, None, Some(u64::MAX)), 10, handle(10)),
        (info(false, None, Some(1000)), u32::MAX, handle(1001)),
        // Limit 1: the header adds nothing, but the handler hears of the claim.
        (info(false, None, Some(1000)), 1, handle(1)),
        // Its handler crashed (classic redelivery): that was the one delivery left.
        (info(true, None, Some(1000)), 10, dead(11)),
        (info(true, None, Some(10)), 10, dead(11)),
        (info(true, None, Some(9)), 10, dead(11)),
        (info(true, None, Some(1000)), 1, dead(2)),
        // Below the limit, the header counts as before.
        (
            info(true, None, Some(3)),
            10,
            Redelivery::Recount { deliveries: 4 },
        ),
        (info(false, None, Some(3)), 10, handle(4)),
        // The broker's own quorum count stays trusted; a header adds at most limit - 1.
        (info(true, Some(10), None), 10, dead(11)),
        (info(true, Some(9), None), 10, handle(10)),
        (info(false, Some(0), Some(1000)), 10, handle(10)),
        (info(true, Some(1), Some(1000)), 10, dead(11)),
        (info(true, Some(1000), Some(1000)), 10, dead(1010)),
    ];
    for (i, (info, limit, want)) in cases.iter().enumerate() {
        assert_eq!(
            decide(*info, *limit),
            *want,
            "case {i}: {info:?}, limit {limit}"
        );
    }
}

/// Header 1000 on a classic queue whose handler crashes every time: exactly one run.
#[test]
fn a_claimed_count_gets_exactly_one_real_delivery() {
    for claim in [9, 10, 11, 1000, u64::MAX] {
        let mut info = DeliveryInfo {
            counted: Some(claim),
            ..fresh()
        };
        let mut runs = 0;
        let outcome = loop {
            match decide(info, 10) {
                Redelivery::Handle { .. } => {
                    runs += 1;
                    info.redelivered = true;
                }
                Redelivery::Recount { deliveries } => {
                    info = DeliveryInfo {
                        counted: Some(u64::from(deliveries)),
                        ..fresh()
                    }
                }
                dead @ Redelivery::DeadLetter { .. } => break dead,
            }
        };
        assert_eq!(
            (runs, outcome),
            (1, Redelivery::DeadLetter { deliveries: 11 }),
            "{claim}"
        );
    }
}

#[test]
fn a_claimed_count_given_back_at_shutdown_is_still_handled() {
    // earlier_deliveries carries the claim over unclamped; decide clamps it on the copy.
    let claimed = DeliveryInfo {
        counted: Some(1000),
        ..fresh()
    };
    assert_eq!(earlier_deliveries(claimed), 1000);
    let copy = DeliveryInfo {
        counted: Some(u64::from(earlier_deliveries(claimed))),
        ..fresh()
    };
    assert_eq!(
        decide(copy, 10),
        Redelivery::Handle {
            deliveries: 10,
            redelivered: true
        }
    );
}

proptest! {
    /// Whatever the headers claim, a delivery the broker has not flagged as redelivered is
    /// handled.
    #[test]
    fn a_header_alone_never_dead_letters(
        counted in proptest::option::of(any::<u64>()),
        quorum in proptest::option::of(any::<u64>()),
        limit: u32,
    ) {
        let info = DeliveryInfo {
            redelivered: false,
            quorum_count: quorum,
            counted,
        };
        let handled = matches!(decide(info, limit), Redelivery::Handle { .. });
        prop_assert!(handled);
    }
}

/// `x-delivery-count` on a delivery without `redelivered` is not the broker's: a quorum queue
/// that counted an earlier delivery also flags the redelivery. A publisher set it (or it is
/// left from another queue), so it is ignored.
#[test]
fn a_quorum_count_on_a_fresh_delivery_is_not_the_brokers() {
    let cases: &[(DeliveryInfo, Redelivery)] = &[
        (
            DeliveryInfo {
                quorum_count: Some(1000),
                ..fresh()
            },
            Redelivery::Handle {
                deliveries: 1,
                redelivered: false,
            },
        ),
        (
            DeliveryInfo {
                quorum_count: Some(u64::MAX),
                counted: Some(2),
                ..fresh()
            },
            Redelivery::Handle {
                deliveries: 3,
                redelivered: true,
            },
        ),
        // Once redelivered, the count is the broker's again: no more runs past the limit.
        (
            DeliveryInfo {
                redelivered: true,
                quorum_count: Some(1000),
                counted: None,
            },
            Redelivery::DeadLetter { deliveries: 1001 },
        ),
    ];
    for (info, want) in cases {
        assert_eq!(decide(*info, 10), *want, "{info:?}");
    }
    let fresh_claim = DeliveryInfo {
        quorum_count: Some(1000),
        ..fresh()
    };
    assert_eq!(earlier_deliveries(fresh_claim), 0);
}
