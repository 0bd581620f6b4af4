//! The checker on hand-made recordings: each kind of fault it must find is found.

use super::super::recorder::{
    ConnectRecord, Delivery, DisconnectRecord, FaultRecord, Plan, PublishRecord,
};
use super::*;

/// Publisher 0 on `a/x`, publisher 1 on `b/x`; subscriber 0 on `a/+`, subscriber 1 on `#`,
/// subscriber 2 on `b/x`.
fn plan() -> Plan {
    Plan {
        publisher_topics: vec!["a/x".into(), "b/x".into()],
        subscriber_filters: vec!["a/+".into(), "#".into(), "b/x".into()],
    }
}

fn acked(publisher: u32, seq: u64) -> PublishRecord {
    PublishRecord {
        publisher,
        seq,
        t_send_us: seq * 1000,
        t_puback_us: Some(seq * 1000 + 500),
        failure: None,
        acked_via: None,
    }
}

fn delivery(subscriber: u32, publisher: u32, seq: u64, t_recv_us: u64) -> Delivery {
    Delivery {
        subscriber,
        publisher,
        seq,
        t_recv_us,
        dup: false,
    }
}

/// Three messages of each publisher, every one delivered once, in order, to each matching
/// subscriber.
fn clean_recording() -> Recording {
    let mut publishes = Vec::new();
    let mut deliveries = Vec::new();
    for seq in 0..3 {
        publishes.push(acked(0, seq));
        publishes.push(acked(1, seq));
        let t = seq * 1000 + 800;
        deliveries.push(delivery(0, 0, seq, t));
        deliveries.push(delivery(1, 0, seq, t));
        deliveries.push(delivery(1, 1, seq, t));
        deliveries.push(delivery(2, 1, seq, t));
    }
    Recording {
        plan: plan(),
        publishes,
        deliveries,
        connects: Vec::new(),
        disconnects: Vec::new(),
        faults: Vec::new(),
        duration_us: 5_000_000,
    }
}

#[test]
fn a_clean_run_has_no_loss_duplicate_or_inversion() {
    let report = check(&clean_recording());
    assert_eq!(report.acked, 6);
    assert_eq!(report.expected, 12);
    assert_eq!(
        (report.lost, report.duplicates, report.inversions),
        (0, 0, 0)
    );
    assert_eq!(report.unexpected, 0);
    assert_eq!(report.f_pub_max_gap_ms, Some(1.0));
    assert_eq!(report.puback_p50_ms, Some(0.5));
}

#[test]
fn a_lost_message_is_found_for_its_subscriber() {
    let mut recording = clean_recording();
    recording
        .deliveries
        .retain(|d| !(d.subscriber == 2 && d.publisher == 1 && d.seq == 1));
    let report = check(&recording);
    assert_eq!(report.lost, 1);
    assert_eq!(
        report.lost_examples,
        [Lost {
            publisher: 1,
            seq: 1,
            subscriber: 2
        }]
    );
}

#[test]
fn a_message_never_acked_is_not_lost() {
    let mut recording = clean_recording();
    recording.publishes.push(PublishRecord {
        publisher: 0,
        seq: 3,
        t_send_us: 3000,
        t_puback_us: None,
        failure: Some("no PUBACK by the end".into()),
        acked_via: None,
    });
    let report = check(&recording);
    assert_eq!(report.lost, 0);
    assert_eq!(report.failures.get("no PUBACK by the end"), Some(&1));
}

#[test]
fn a_duplicate_is_counted_and_is_not_an_inversion() {
    let mut recording = clean_recording();
    let mut again = delivery(0, 0, 1, 10_000);
    again.dup = true;
    recording.deliveries.push(again);
    let report = check(&recording);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.dup_flagged, 1);
    assert_eq!(report.inversions, 0);
    assert_eq!(report.lost, 0);
}

#[test]
fn an_inversion_is_found_per_publisher_and_subscriber() {
    let mut recording = clean_recording();
    // Subscriber 1 gets publisher 1's seq 2 before seq 1.
    for d in &mut recording.deliveries {
        if d.subscriber == 1 && d.publisher == 1 && d.seq == 1 {
            d.t_recv_us = 2900;
        }
    }
    let report = check(&recording);
    assert_eq!(report.inversions, 1);
    assert_eq!((report.lost, report.duplicates), (0, 0));
}

#[test]
fn a_delivery_to_a_subscriber_that_does_not_match_is_unexpected() {
    let mut recording = clean_recording();
    recording.deliveries.push(delivery(2, 0, 0, 900));
    assert_eq!(check(&recording).unexpected, 1);
}

#[test]
fn fault_figures_measure_the_stall_the_first_delivery_and_the_resume() {
    let mut recording = clean_recording();
    recording.faults.push(FaultRecord {
        name: "kill".into(),
        t_us: 1600,
    });
    let client = ClientRef::Subscriber(0);
    recording.disconnects.push(DisconnectRecord {
        client,
        t_us: 1700,
        address: 0,
        reason: "reset".into(),
    });
    recording.connects.push(ConnectRecord {
        client,
        t_us: 2100,
        address: 0,
        session_present: true,
        reconnect: true,
    });
    let report = check(&recording);
    let fault = &report.faults[0];
    // PUBACKs at 1.5 ms and 2.5 ms around the fault at 1.6 ms.
    assert_eq!(fault.pub_stall_ms, Some(1.0));
    assert_eq!(fault.f_sub_ms, Some(0.2)); // the delivery at 1.8 ms
                                           // Subscriber 0, cut off at 1.7 ms, next receives at 1.8 ms.
    assert_eq!(fault.f_sub_affected_max_ms, Some(0.2));
    assert_eq!((fault.clients_disconnected, fault.clients_resumed), (1, 1));
    assert_eq!(fault.resume_max_ms, Some(0.5));
    assert_eq!(report.reconnects, 1);
    assert_eq!(report.session_present_rate, 1.0);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["faults"][0]["name"], "kill");
    assert!(report.to_string().contains("L lost"));
}
