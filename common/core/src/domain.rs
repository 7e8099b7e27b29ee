//! Domain values, parsed once at the edge (parse, don't validate). Each type has a private
//! field and one fallible constructor, so holding one proves the rule was checked.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization as _;

use crate::DomainError;

/// A username: `^[a-z0-9_]{3,32}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Checks the username rule; `invalid_username` otherwise.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (3..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::new(
                "invalid_username",
                "username must be 3-32 characters of a-z, 0-9 and _",
            ))
        }
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed: 8–128 characters. Secret, so it never reaches a log.
pub struct Password(SecretString);

impl Password {
    /// Checks the length rule; `invalid_password` otherwise.
    pub fn parse(raw: SecretString) -> Result<Self, DomainError> {
        let chars = raw.expose_secret().chars().count();
        if (8..=128).contains(&chars) {
            Ok(Self(raw))
        } else {
            Err(DomainError::new(
                "invalid_password",
                "password must be 8-128 characters",
            ))
        }
    }

    /// The password, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Longest message, in Unicode scalar values.
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// Message text: 1–4000 characters, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Checks the text rule; `invalid_text` otherwise.
    pub fn parse(raw: String) -> Result<Self, DomainError> {
        if raw.trim().is_empty() || raw.chars().count() > MAX_MESSAGE_CHARS {
            return Err(DomainError::new(
                "invalid_text",
                format!("text must be 1-{MAX_MESSAGE_CHARS} characters and not only whitespace"),
            ));
        }
        Ok(Self(raw))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's id. Clients see it as an opaque string; inside it is the row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageId(i64);

impl MessageId {
    /// Wraps a row id read from the database.
    pub fn from_row(id: i64) -> Self {
        Self(id)
    }

    /// Parses a client-supplied id. `None` for anything we could not have issued, which
    /// the caller turns into 404 (an unknown id is simply not found).
    pub fn parse(raw: &str) -> Option<Self> {
        // Only canonical decimal forms, so "007" and "7" are not two names for one row.
        if raw.is_empty() || raw.len() > 19 || raw.starts_with('0') {
            return None;
        }
        raw.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| raw.parse().ok().map(Self))
            .flatten()
    }

    /// The row id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A page size: 1–100, default 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    /// Default page size.
    pub const DEFAULT: Limit = Limit(20);

    /// Parses `?limit=`; absent means [`Limit::DEFAULT`]; `invalid_limit` otherwise.
    pub fn parse(raw: Option<&str>) -> Result<Self, DomainError> {
        Self::parse_or(raw, Self::DEFAULT)
    }

    /// Like [`Limit::parse`] with another default.
    pub fn parse_or(raw: Option<&str>, default: Limit) -> Result<Self, DomainError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        match raw.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(Self(n)),
            _ => Err(DomainError::new(
                "invalid_limit",
                "limit must be an integer from 1 to 100",
            )),
        }
    }

    /// The largest page.
    pub const MAX: Limit = Limit(100);

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A keyset-pagination cursor: the id of the last message of the previous page. Clients
/// treat it as opaque; it is the id in decimal (at most 18 digits), so that the API
/// document can state exactly which values are valid (`^[1-9][0-9]{0,17}$`) and a
/// generated client or fuzzer never sends a well-formed cursor the server refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(MessageId);

impl Cursor {
    /// The cursor pointing after `id`.
    pub fn after(id: MessageId) -> Self {
        Self(id)
    }

    /// Decodes `?before=`; `invalid_cursor` when it is not one we issued.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Some(raw)
            .filter(|raw| raw.len() <= 18)
            .and_then(MessageId::parse)
            .map(Self)
            .ok_or_else(|| DomainError::new("invalid_cursor", "cursor is not valid"))
    }

    /// The encoded form sent to clients.
    pub fn encode(self) -> String {
        self.0.to_string()
    }

    /// Messages strictly older than this id come next.
    pub fn id(self) -> MessageId {
        self.0
    }
}

/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// Most distinct words a search may have: each is an index scan, so a query of a hundred
/// one-letter words would cost a hundred.
pub const MAX_QUERY_TERMS: usize = 10;

/// A search query: 1–200 characters, split into at most [`MAX_QUERY_TERMS`] distinct
/// words that must each prefix a word of a matching message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(Vec<String>);

impl SearchQuery {
    /// Parses `?q=`; `invalid_query` when empty, blank or too long, `too_many_terms` past
    /// [`MAX_QUERY_TERMS`] distinct words (repeats count once). A query of only
    /// punctuation parses to no words and matches nothing (never everything).
    pub fn parse(raw: Option<&str>) -> Result<Self, DomainError> {
        let raw = raw.unwrap_or_default();
        if raw.trim().is_empty() || raw.chars().count() > MAX_QUERY_CHARS {
            return Err(DomainError::new(
                "invalid_query",
                format!("q must be 1-{MAX_QUERY_CHARS} characters"),
            ));
        }
        let mut words = search_tokens(raw);
        words.sort();
        words.dedup();
        if words.len() > MAX_QUERY_TERMS {
            return Err(DomainError::new(
                "too_many_terms",
                format!(
                    "search for at most {MAX_QUERY_TERMS} different words (this query has {})",
                    words.len()
                ),
            ));
        }
        Ok(Self(words))
    }

    /// Lower-cased words; every one must prefix some word of a match.
    pub fn words(&self) -> &[String] {
        &self.0
    }
}

/// Longest indexed token, in characters; longer words are indexed by this prefix.
pub const MAX_TOKEN_CHARS: usize = 64;

/// Splits text into lower-cased search tokens, the same way for indexing and querying.
///
/// The text is normalised to NFC first, so a word typed with a precomposed `é` and one
/// typed as `e` + combining accent are the same token (canonically equivalent text,
/// which browsers and keyboards produce either way).
///
/// A token is a run of letters and digits of any script, plus symbols outside ASCII
/// (so emoji are searchable). ASCII punctuation, Unicode punctuation blocks and
/// whitespace separate tokens; this is also what makes `%`, `_`, `*`, `+`, `-`, `"` and `(`
/// plain text rather than syntax: they never reach SQL as anything but separators.
pub fn search_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.nfc() {
        if is_token_char(c) {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            tokens.push(truncate_token(std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        tokens.push(truncate_token(current));
    }
    tokens
}

fn truncate_token(token: String) -> String {
    match token.char_indices().nth(MAX_TOKEN_CHARS) {
        Some((cut, _)) => token[..cut].to_owned(),
        None => token,
    }
}

fn is_token_char(c: char) -> bool {
    if c.is_alphanumeric() {
        return true;
    }
    if c.is_ascii() || c.is_whitespace() || c.is_control() {
        return false;
    }
    let cp = u32::from(c);
    // Zero-width joiner and variation selectors hold emoji sequences together.
    if cp == 0x200D || (0xFE00..=0xFE0F).contains(&cp) {
        return true;
    }
    let punctuation_blocks = [
        0x00A0..=0x00BF, // Latin-1 punctuation and signs
        0x2000..=0x206F, // General Punctuation
        0x3000..=0x303F, // CJK Symbols and Punctuation
        0xFE30..=0xFE4F, // CJK Compatibility Forms
        0xFF00..=0xFF0F, // Fullwidth ASCII punctuation
        0xFF1A..=0xFF20,
        0xFF3B..=0xFF40,
        0xFF5B..=0xFF65,
    ];
    !punctuation_blocks.iter().any(|block| block.contains(&cp))
}

/// An `Idempotency-Key` header value: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks the rule; `invalid_idempotency_key` otherwise.
    pub fn parse(raw: &[u8]) -> Result<Self, DomainError> {
        let ok = (1..=255).contains(&raw.len()) && raw.iter().all(|b| b.is_ascii_graphic());
        match std::str::from_utf8(raw) {
            Ok(s) if ok => Ok(Self(s.to_owned())),
            _ => Err(DomainError::new(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )),
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A session id: 256 random bits, base64url. Only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses a cookie value; `None` for anything we could not have issued.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 43
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id, for the cookie only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the id: it is a bearer credential.
        f.write_str("SessionId(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_pattern() {
        assert!(Username::parse("ab_9").is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("Abc").is_err());
        assert!(Username::parse("abc-d").is_err());
        assert!(Username::parse("ａbc").is_err());
    }

    #[test]
    fn tokens_split_on_punctuation_and_lowercase_any_script() {
        assert_eq!(search_tokens("Hello, World!"), ["hello", "world"]);
        assert_eq!(search_tokens("메시지를 보냈다"), ["메시지를", "보냈다"]);
        assert_eq!(search_tokens("Ünïcode ÉTÉ"), ["ünïcode", "été"]);
        assert_eq!(
            search_tokens("50% off_now +x -y \"z\" (w) a*"),
            ["50", "off", "now", "x", "y", "z", "w", "a"]
        );
        assert_eq!(
            search_tokens("party 🎉 time 👩‍💻"),
            ["party", "🎉", "time", "👩‍💻"]
        );
        assert_eq!(search_tokens("안녕。세상"), ["안녕", "세상"]);
    }

    /// The table the web app's highlighting is tested against too.
    #[test]
    fn tokens_follow_the_table_the_web_app_shares() {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/search/tokens.json"))
                .expect("docs/search/tokens.json is JSON");
        let cases = table["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().expect("text");
            let expected: Vec<&str> = case["tokens"]
                .as_array()
                .expect("tokens")
                .iter()
                .map(|t| t.as_str().expect("a token"))
                .collect();
            assert_eq!(search_tokens(text), expected, "{text:?}");
        }
    }

    #[test]
    fn long_tokens_are_cut_to_the_index_width() {
        let long = "é".repeat(100);
        assert_eq!(search_tokens(&long)[0].chars().count(), MAX_TOKEN_CHARS);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor::after(MessageId::from_row(42));
        assert_eq!(Cursor::parse(&c.encode()).ok(), Some(c));
        assert_eq!(Cursor::parse("42").ok(), Some(c));
        assert!(Cursor::parse("!!").is_err());
        assert!(Cursor::parse("042").is_err());
        assert!(Cursor::parse("1234567890123456789").is_err(), "19 digits");
        assert!(Cursor::parse("123456789012345678").is_ok(), "18 digits");
    }

    #[test]
    fn message_ids_are_canonical_decimals() {
        assert_eq!(MessageId::parse("7"), Some(MessageId::from_row(7)));
        assert_eq!(MessageId::parse("07"), None);
        assert_eq!(MessageId::parse("-1"), None);
        assert_eq!(MessageId::parse("99999999999999999999"), None);
    }

    #[test]
    fn message_text_counts_characters_not_bytes() {
        assert!(MessageText::parse("한".repeat(4000)).is_ok());
        assert!(MessageText::parse("한".repeat(4001)).is_err());
        assert!(MessageText::parse(" \n\t".into()).is_err());
    }
}
