//! The two content modes, shared by both bindings.
//!
//! - Structured: the whole event as the SDK's JSON event format, after our check of
//!   `specversion` ([`read_structured`]).
//! - Binary: attributes as headers with a prefix (`ce-` on HTTP, `ce_` on Kafka),
//!   `datacontenttype` as `content-type`, the data as the body, byte for byte. Events are
//!   read into and written from the SDK's event through its message traits
//!   ([`BinaryDeserializer`], [`BinarySerializer`]), so the SDK's builder decides what is
//!   an attribute, what is an extension and what a valid event is ([`read_binary`],
//!   [`write_binary`]).
//!
//! Why not the SDK's own bindings: cloudevents-sdk 0.9's HTTP binding neither
//! percent-encodes header values when writing nor decodes them when reading, which the
//! HTTP binding requires (spec 1.0.2, HTTP binding 3.1.3.2) and Python's `cloudevents`
//! 2.x does: its `ce-source: %2Ftests` would reach a handler as `%2Ftests`, and any
//! non-ASCII value is refused. Its Kafka binding is built on rdkafka 0.38 with
//! `cmake-build` forced (we link rdkafka 0.39), so it would bring a second librdkafka and
//! record types that are not ours. A release that percent-codes HTTP headers, and one on
//! rdkafka >= 0.39 that leaves the build features to us, would let this module go.

use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};
use missive_core::event::{CloudEvent, SpecVersion};

/// The header conventions of one binding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Convention {
    /// `ce-` or `ce_`.
    pub prefix: &'static str,
    /// Whether values are percent-encoded (HTTP) or plain UTF-8 (Kafka).
    pub percent: bool,
}

/// HTTP: `ce-` headers, percent-encoded values.
pub(crate) const HTTP: Convention = Convention {
    prefix: "ce-",
    percent: true,
};

/// Kafka: `ce_` headers, UTF-8 values.
pub(crate) const KAFKA: Convention = Convention {
    prefix: "ce_",
    percent: false,
};

const CONTENT_TYPE: &str = "content-type";

/// A message as written: header (name, value) pairs and the body.
pub(crate) type Written = (Vec<(String, String)>, Vec<u8>);

/// Reads a binary-mode message: `headers` as (lower-case name, raw value), `body` the
/// data. Headers without the prefix (other than `content-type`) are ignored. `Err` says
/// what is wrong, naming the header.
pub(crate) fn read_binary(
    convention: Convention,
    headers: impl IntoIterator<Item = (String, Vec<u8>)>,
    body: &[u8],
) -> Result<CloudEvent, String> {
    let mut message = Message {
        version: None,
        attributes: Vec::new(),
        content_type: None,
        body: body.to_vec(),
    };
    for (name, raw) in headers {
        let is_content_type = name == CONTENT_TYPE;
        let Some(attribute) = name.strip_prefix(convention.prefix) else {
            if !is_content_type {
                continue;
            }
            message.content_type =
                Some(String::from_utf8(raw).map_err(|_| format!("{name} is not UTF-8"))?);
            continue;
        };
        let value = decode(convention, &name, &raw)?;
        if attribute == "specversion" {
            message.version = Some(value);
        } else {
            message.attributes.push((attribute.to_owned(), value));
        }
    }
    match message.version.as_deref() {
        Some(v) if v == SpecVersion::V10.as_str() => {}
        Some(other) => return Err(format!("unsupported specversion {other}")),
        None => return Err("missing specversion".into()),
    }
    for required in ["id", "source", "type"] {
        if !message.attributes.iter().any(|(name, _)| name == required) {
            return Err(format!("missing header {}{required}", convention.prefix));
        }
    }
    BinaryDeserializer::into_event(message).map_err(|e| describe(&e))
}

/// Writes `event` in binary mode: header (name, value) pairs and the body.
pub(crate) fn write_binary(convention: Convention, event: &CloudEvent) -> Result<Written, String> {
    event
        .clone()
        .deserialize_binary(Writer {
            convention,
            headers: Vec::new(),
        })
        .map_err(|e| describe(&e))
}

/// A structured-mode event (`application/cloudevents+json`): the SDK's JSON event format,
/// after our check of `specversion`.
pub(crate) fn read_structured(body: &[u8]) -> Result<CloudEvent, String> {
    use serde::Deserialize as _;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("structured event is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("structured event must be an object")?;
    match object.get("specversion") {
        Some(serde_json::Value::String(v)) if v == SpecVersion::V10.as_str() => {}
        Some(serde_json::Value::String(other)) => {
            return Err(format!("unsupported specversion {other}"));
        }
        Some(_) => return Err("specversion must be a string".into()),
        None => return Err("missing specversion".into()),
    }
    CloudEvent::deserialize(value).map_err(|e| format!("invalid structured event: {e}"))
}

/// The SDK's reason, in our words where it has a clearer one.
pub(crate) fn describe(error: &cloudevents::message::Error) -> String {
    use cloudevents::message::Error;
    match error {
        Error::ParseTimeError { .. } => "time must be RFC 3339".into(),
        Error::ParseUrlError { .. } => "dataschema must be an absolute URI".into(),
        Error::SerdeJsonError { source } => format!("invalid structured event: {source}"),
        Error::Other { source } => source.to_string(),
        other => other.to_string(),
    }
}

/// A header value as text: percent-decoded on HTTP, where the raw value must be
/// printable ASCII; UTF-8 either way.
fn decode(convention: Convention, name: &str, raw: &[u8]) -> Result<String, String> {
    if !convention.percent {
        return String::from_utf8(raw.to_vec()).map_err(|_| format!("header {name} is not UTF-8"));
    }
    if !raw.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
        return Err(format!("{name} is not ASCII"));
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match raw[i..] {
            [b'%', h, l, ..] if hex(h).is_some() && hex(l).is_some() => {
                let byte = hex(h).unwrap_or_default() * 16 + hex(l).unwrap_or_default();
                bytes.push(u8::try_from(byte).unwrap_or_default());
                i += 3;
            }
            // A `%` that starts no escape is taken as itself.
            _ => {
                bytes.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 once percent-decoded"))
}

/// A header value as written: on HTTP, space, `"`, `%` and everything outside printable
/// ASCII percent-encoded (what the HTTP binding requires; the rest stays readable).
fn encode(convention: Convention, value: &str) -> String {
    if !convention.percent {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (0x21..0x7f).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A binary-mode message read from headers, for the SDK's event builder.
struct Message {
    version: Option<String>,
    attributes: Vec<(String, String)>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl BinaryDeserializer for Message {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut visitor: V,
    ) -> cloudevents::message::Result<R> {
        let version = SpecVersion::try_from(self.version.as_deref().unwrap_or_default())?;
        let known = version.attribute_names();
        visitor = visitor.set_spec_version(version)?;
        for (name, value) in self.attributes {
            let value = MessageAttributeValue::String(value);
            visitor = if known.contains(&name.as_str()) {
                visitor.set_attribute(&name, value)?
            } else {
                visitor.set_extension(&name, value)?
            };
        }
        // `content-type` is how both bindings say `datacontenttype`.
        if let Some(content_type) = self.content_type {
            visitor = visitor.set_attribute(
                "datacontenttype",
                MessageAttributeValue::String(content_type),
            )?;
        }
        if self.body.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.body)
        }
    }
}

/// Collects what the SDK writes of an event as headers and a body.
struct Writer {
    convention: Convention,
    headers: Vec<(String, String)>,
}

impl Writer {
    fn push(mut self, name: &str, value: &MessageAttributeValue) -> Self {
        let text = match value {
            // RFC 3339 UTC with milliseconds and `Z`, as our events have always said it.
            MessageAttributeValue::DateTime(time) => missive_core::event::rfc3339(time),
            other => other.to_string(),
        };
        // `content-type` is a media type, written as it is; attributes are percent-coded.
        let header = if name == "datacontenttype" {
            (CONTENT_TYPE.to_owned(), text)
        } else {
            (
                format!("{}{name}", self.convention.prefix),
                encode(self.convention, &text),
            )
        };
        self.headers.push(header);
        self
    }
}

impl BinarySerializer<Written> for Writer {
    fn set_spec_version(self, version: SpecVersion) -> cloudevents::message::Result<Self> {
        Ok(self.push(
            "specversion",
            &MessageAttributeValue::String(version.as_str().to_owned()),
        ))
    }

    fn set_attribute(
        self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        Ok(self.push(name, &value))
    }

    fn set_extension(
        self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        Ok(self.push(name, &value))
    }

    fn end_with_data(self, bytes: Vec<u8>) -> cloudevents::message::Result<Written> {
        Ok((self.headers, bytes))
    }

    fn end(self) -> cloudevents::message::Result<Written> {
        Ok((self.headers, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_values_are_percent_coded_as_the_binding_says() {
        for (plain, wire) in [
            ("/functions/message-create", "/functions/message-create"),
            ("2026-12-02T10:00:00.123Z", "2026-12-02T10:00:00.123Z"),
            (
                "zoë says \"hi\" 100%",
                "zo%C3%AB%20says%20%22hi%22%20100%25",
            ),
        ] {
            assert_eq!(encode(HTTP, plain), wire);
            assert_eq!(decode(HTTP, "ce-x", wire.as_bytes()), Ok(plain.to_owned()));
        }
        // Unnecessary escapes (Python's `cloudevents` escapes `/` and `:`) are accepted.
        assert_eq!(
            decode(HTTP, "ce-source", b"%2Ftests%2Fpython").as_deref(),
            Ok("/tests/python")
        );
        assert_eq!(decode(HTTP, "ce-x", b"50% off").as_deref(), Ok("50% off"));
        assert_eq!(
            decode(HTTP, "ce-x", b"%FF"),
            Err("ce-x is not UTF-8 once percent-decoded".into())
        );
        assert_eq!(
            decode(HTTP, "ce-x", "zoë".as_bytes()),
            Err("ce-x is not ASCII".into())
        );
        // Kafka carries UTF-8 as it is.
        assert_eq!(encode(KAFKA, "zoë 100%"), "zoë 100%");
        assert_eq!(
            decode(KAFKA, "ce_x", "zoë".as_bytes()).as_deref(),
            Ok("zoë")
        );
    }
}
