//! Kafka over TLS and SASL, against private tansu brokers the test starts with
//! certificates it makes: `ssl` and `sasl_ssl` (PLAIN, SCRAM-SHA-256/512), a CA file,
//! and a clear refusal of an unknown CA, a wrong host name and wrong credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use missive_adapters::events::EventPublisher as _;
use missive_adapters::events::kafka::{
    KafkaConnection, KafkaPublisher, KafkaSecurity, SaslMechanism, SecurityProtocol, ensure_topics,
};
use missive_core::event::{EventBuilder as _, EventBuilderV10};
use missive_testkit::tls::{Pki, TlsKafka};
use secrecy::SecretString;

fn event() -> missive_core::event::CloudEvent {
    EventBuilderV10::new()
        .id(uuid::Uuid::new_v4().to_string())
        .source("/tests/kafka-tls")
        .ty("test.tls")
        .build()
        .unwrap()
}

fn ssl(ca: &std::path::Path) -> KafkaSecurity {
    KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        ca_file: Some(ca.to_owned()),
        ..KafkaSecurity::default()
    }
}

/// Creates a topic and publishes one event to it; the error, with its chain, if either
/// fails.
async fn round_trip(brokers: &str, security: &KafkaSecurity) -> Result<(), String> {
    let kafka = KafkaConnection::new(brokers, security, None, []).map_err(|e| format!("{e:#}"))?;
    let topic = format!("tls-{}", uuid::Uuid::new_v4());
    ensure_topics(&kafka, &[&topic], 1)
        .await
        .map_err(|e| format!("{e:#}"))?;
    KafkaPublisher::new(&kafka, &topic)
        .map_err(|e| format!("{e:#}"))?
        .publish(&event())
        .await
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn kafka_over_tls_is_verified_by_ca_and_host_name() {
    let pki = Pki::new(&["localhost"]);
    let broker = TlsKafka::start(&pki, "localhost", false);
    let port = broker.port;

    round_trip(&format!("localhost:{port}"), &ssl(&pki.ca))
        .await
        .unwrap();

    // Plaintext to a TLS listener: nothing works, and the reason is not hidden.
    let started = Instant::now();
    let err = round_trip(&format!("localhost:{port}"), &KafkaSecurity::default())
        .await
        .unwrap_err();
    assert!(err.contains("Kafka (KAFKA_BROKERS)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // A CA that did not sign the broker's certificate.
    let err = round_trip(&format!("localhost:{port}"), &ssl(&pki.other_ca))
        .await
        .unwrap_err();
    assert!(err.contains("Kafka (KAFKA_BROKERS)"), "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");

    // The right CA, the wrong name (the certificate names localhost only).
    let err = round_trip(&format!("127.0.0.1:{port}"), &ssl(&pki.ca))
        .await
        .unwrap_err();
    assert!(err.contains("Kafka (KAFKA_BROKERS)"), "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[tokio::test]
async fn kafka_sasl_ssl_authenticates_with_plain_and_scram() {
    let pki = Pki::new(&["localhost"]);
    let broker = TlsKafka::start(&pki, "localhost", true);
    let brokers = format!("localhost:{}", broker.port);
    broker.create_user("missive", "right-password");
    let sasl = |mechanism, password: &str| KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        mechanism: Some(mechanism),
        username: Some("missive".to_owned()),
        password: Some(SecretString::from(password.to_owned())),
        ca_file: Some(pki.ca.clone()),
        ..KafkaSecurity::default()
    };
    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::ScramSha256] {
        round_trip(&brokers, &sasl(mechanism, "right-password"))
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?}: {e}"));
        let err = round_trip(&brokers, &sasl(mechanism, "wrong-password"))
            .await
            .unwrap_err();
        assert!(err.contains("Kafka (KAFKA_BROKERS)"), "{err}");
        assert!(
            err.contains("Authentication failed") || err.contains("SASL"),
            "{err}"
        );
    }
    // tansu accepts any PLAIN password; what is checked here is that PLAIN is spoken.
    round_trip(&brokers, &sasl(SaslMechanism::Plain, "any"))
        .await
        .unwrap();
    // Without SASL, an authenticating broker answers nothing useful.
    round_trip(&brokers, &ssl(&pki.ca)).await.unwrap_err();
}
