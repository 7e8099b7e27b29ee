//! Request and response bodies that more than one function shares, with their OpenAPI
//! schemas. Bodies used by one function live in that function's crate.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::activity::Entry;
use crate::db::Message;

/// `POST /api/auth/signup` and `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// `^[a-z0-9_]{3,32}$`.
    #[schema(example = "alice")]
    pub username: String,
    /// 8–128 characters.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Who is logged in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserBody {
    /// The username.
    #[schema(example = "alice")]
    pub username: String,
}

/// `POST /api/messages`.
#[derive(Deserialize, ToSchema)]
pub struct NewMessage {
    /// 1–4000 characters, not only whitespace.
    pub text: String,
}

/// Search results, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    /// Matching messages.
    pub items: Vec<Message>,
}

/// The activity feed, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ActivityList {
    /// Entries.
    pub items: Vec<Entry>,
}
