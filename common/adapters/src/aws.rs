//! Credentials from AWS (the `aws` feature): passwords from Secrets Manager, IAM tokens
//! for ElastiCache (Redis) and MSK (Kafka), all signed with the process's identity from
//! the default provider chain: the environment (Lambda), a web identity token (IRSA on
//! EKS), EKS Pod Identity, ECS, or the instance metadata service.
//!
//! Nothing here runs at start-up: the SDK configuration is loaded the first time a
//! credential is needed (the first connection), so a cold start without AWS credentials
//! to fetch costs nothing. The HTTP client is rustls on ring, as every TLS client here.
//!
//! IAM tokens are SigV4 presigned URLs (`aws-sigv4`), valid for 15 minutes; they are
//! used for new connections for 10 minutes, then signed again (see [`TOKEN_LIFETIME`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials as AwsCredentials;
use aws_credential_types::provider::ProvideCredentials;
use secrecy::{ExposeSecret, SecretString};

use crate::credentials::{CredentialSource, Credentials};

/// How long a presigned IAM token is valid: RDS, ElastiCache and MSK accept at most 15
/// minutes.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(900);

/// How long a token is used for new connections before a fresh one is signed: well
/// inside [`TOKEN_VALIDITY`], so a connection opened at the end still authenticates.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Cloud credentials are renewed when this close to their expiry.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// The process's AWS identity and region, loaded on first use; cheap to clone.
#[derive(Clone, Debug)]
pub struct Aws {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: tokio::sync::OnceCell<SdkConfig>,
    /// The last credentials, reused until close to their expiry: the default chain
    /// itself does not cache (with IRSA each call would be an STS request).
    credentials: tokio::sync::Mutex<Option<AwsCredentials>>,
    /// The runtime the process runs on, for the Kafka token callback, which librdkafka
    /// calls on its own threads.
    runtime: Option<tokio::runtime::Handle>,
}

impl Aws {
    /// One per process: every backend signs with the same identity, and the SDK
    /// configuration is loaded once.
    pub fn shared() -> Self {
        static SHARED: OnceLock<Aws> = OnceLock::new();
        SHARED.get_or_init(Self::new).clone()
    }

    /// A handle of its own (tests; [`Aws::shared`] otherwise). No I/O.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                config: tokio::sync::OnceCell::new(),
                credentials: tokio::sync::Mutex::new(None),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    /// Fixed credentials, region and (optionally) endpoint instead of the provider
    /// chain: tests against a local fake, or a deployment given keys some other way.
    pub async fn fixed(
        region: &str,
        endpoint_url: Option<&str>,
        access_key_id: &str,
        secret_access_key: &SecretString,
    ) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .region(aws_config::Region::new(region.to_owned()))
            .credentials_provider(AwsCredentials::new(
                access_key_id,
                secret_access_key.expose_secret(),
                None,
                None,
                "fixed",
            ));
        if let Some(endpoint_url) = endpoint_url {
            loader = loader.endpoint_url(endpoint_url);
        }
        let aws = Self::new();
        let config = loader.load().await;
        aws.inner
            .config
            .set(config)
            .unwrap_or_else(|_| unreachable!("a new handle has no configuration yet"));
        aws
    }

    /// The SDK configuration from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// the provider chain's variables, `~/.aws`), loaded once.
    pub async fn config(&self) -> &SdkConfig {
        self.inner
            .config
            .get_or_init(|| async {
                aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http_client())
                    .load()
                    .await
            })
            .await
    }

    /// The region (`AWS_REGION`, or the profile's, or the instance's).
    pub async fn region(&self) -> anyhow::Result<String> {
        Ok(self
            .config()
            .await
            .region()
            .context("no AWS region: set AWS_REGION")?
            .to_string())
    }

    /// Current credentials from the default provider chain, cached until close to
    /// their expiry.
    pub async fn credentials(&self) -> anyhow::Result<AwsCredentials> {
        let mut cached = self.inner.credentials.lock().await;
        if let Some(credentials) = cached.as_ref()
            && credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIALS_MARGIN)
        {
            return Ok(credentials.clone());
        }
        let provider = self
            .config()
            .await
            .credentials_provider()
            .context("no AWS credentials provider")?;
        let credentials = provider.provide_credentials().await.map_err(|err| {
            anyhow::anyhow!(
                "{}",
                aws_credential_types::provider::error::CredentialsError::to_string(&err)
            )
            .context(
                "no AWS credentials from the default chain (environment, web identity \
                 token, EKS Pod Identity, ECS, instance metadata)",
            )
        })?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// [`Aws::credentials`] and [`Aws::region`] for a caller that cannot await
    /// (librdkafka's token callback, on librdkafka's thread): the lookup runs on the
    /// process's runtime from a helper thread, so the caller may itself be on a runtime
    /// thread. (On a runtime with one worker, blocked here, a lookup that needs the
    /// network would wait for that worker; the functions' runtimes have one per core,
    /// and credentials are cached for most of their life.)
    pub fn credentials_and_region_blocking(&self) -> anyhow::Result<(AwsCredentials, String)> {
        let aws = self.clone();
        let handle = self.inner.runtime.clone();
        let lookup = async move { Ok((aws.credentials().await?, aws.region().await?)) };
        std::thread::scope(|scope| {
            scope
                .spawn(move || match handle {
                    Some(handle) => handle.block_on(lookup),
                    None => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("starting a runtime for AWS credentials")?
                        .block_on(lookup),
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the AWS credentials lookup panicked"))?
        })
    }
}

/// The SDK's HTTP client on rustls with ring (the SDK's default is aws-lc).
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl Default for Aws {
    fn default() -> Self {
        Self::new()
    }
}

/// `url` (with its query: the action and its parameters) presigned for `service` in
/// `region`: the SigV4 query parameters appended, valid for `expires_in` from `time`.
/// What RDS, ElastiCache and MSK IAM tokens are made of.
pub fn presign(
    url: &str,
    service: &str,
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
    expires_in: Duration,
) -> anyhow::Result<url::Url> {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    use aws_sigv4::sign::v4::SigningParams;

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    let identity = credentials.clone().into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .context("SigV4 signing parameters")?;
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .context("a request to presign")?;
    let (instructions, _) = sign(request, &params.into())
        .context("SigV4 presigning")?
        .into_parts();
    let mut signed = url::Url::parse(url).context("a URL to presign")?;
    {
        let mut query = signed.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
    }
    Ok(signed)
}

/// An RDS IAM authentication token for `user` at `host:port`, as `aws-sdk-rds`'s
/// generator makes it (the same presigned URL without its scheme).
///
/// Not used for connections yet: RDS sends IAM users to the `mysql_clear_password`
/// plugin, which sqlx enables only through MySQL-specific options, and the pool here is
/// sqlx's `Any` (see docs/operations.md, "Cloud credentials"). Kept, with the SDK's
/// own test vector, because it is the reference that [`presign`] is checked against.
pub fn rds_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
) -> anyhow::Result<String> {
    let mut url =
        url::Url::parse(&format!("https://{host}:{port}/")).context("an RDS host name")?;
    url.query_pairs_mut()
        .append_pair("Action", "connect")
        .append_pair("DBUser", user);
    connect_token(&url, "rds-db", region, credentials, time)
}

/// An ElastiCache IAM authentication token: the password of `user` (the ElastiCache user
/// id, which must equal its user name) on the replication group or serverless cache
/// `cache_name`.
pub fn elasticache_token(
    cache_name: &str,
    user: &str,
    serverless: bool,
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
) -> anyhow::Result<String> {
    let mut url =
        url::Url::parse(&format!("http://{cache_name}/")).context("an ElastiCache cache name")?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("Action", "connect")
            .append_pair("User", user);
        if serverless {
            query.append_pair("ResourceType", "ServerlessCache");
        }
    }
    connect_token(&url, "elasticache", region, credentials, time)
}

/// An MSK IAM OAUTHBEARER token, as AWS's signer libraries make it: the presigned
/// `kafka-cluster:Connect` URL with a `User-Agent` parameter, base64url without padding.
/// Returns the token and when it expires.
pub fn msk_token(
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
) -> anyhow::Result<(SecretString, SystemTime)> {
    use base64::Engine;
    let mut url = url::Url::parse(&format!("https://kafka.{region}.amazonaws.com/"))
        .context("an AWS region")?;
    url.query_pairs_mut()
        .append_pair("Action", "kafka-cluster:Connect");
    let mut signed = presign(
        url.as_str(),
        "kafka-cluster",
        region,
        credentials,
        time,
        TOKEN_VALIDITY,
    )?;
    signed
        .query_pairs_mut()
        .append_pair("User-Agent", concat!("missive/", env!("CARGO_PKG_VERSION")));
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.as_str());
    let mut expires = time + TOKEN_VALIDITY;
    if let Some(expiry) = credentials.expiry() {
        expires = expires.min(expiry);
    }
    Ok((token.into(), expires))
}

/// The token RDS and ElastiCache take as a password: `url` presigned for
/// [`TOKEN_VALIDITY`], without its scheme.
fn connect_token(
    url: &url::Url,
    service: &str,
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
) -> anyhow::Result<String> {
    let signed = presign(
        url.as_str(),
        service,
        region,
        credentials,
        time,
        TOKEN_VALIDITY,
    )?;
    let text = signed.as_str();
    Ok(text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .to_owned())
}

/// A password kept in AWS Secrets Manager (`DATABASE_SECRET_ARN`, `REDIS_SECRET_ARN`):
/// the secret is either JSON with `password` (and `username`), as RDS-managed and
/// rotation-Lambda secrets are, or the password itself.
#[derive(Debug)]
pub struct SecretPassword {
    aws: Aws,
    secret_id: String,
    /// The variable that named the secret, for messages.
    variable: &'static str,
    client: tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>,
}

impl SecretPassword {
    /// The secret `secret_id` (an ARN or name), named by `variable`. No I/O.
    pub fn new(aws: Aws, secret_id: &str, variable: &'static str) -> Self {
        Self {
            aws,
            secret_id: secret_id.to_owned(),
            variable,
            client: tokio::sync::OnceCell::new(),
        }
    }
}

#[async_trait::async_trait]
impl CredentialSource for SecretPassword {
    async fn fetch(&self) -> anyhow::Result<Credentials> {
        let client = self
            .client
            .get_or_init(|| async { aws_sdk_secretsmanager::Client::new(self.aws.config().await) })
            .await;
        let output = client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "{}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(err)
                )
            })?;
        let text = output
            .secret_string()
            .context("the secret has no SecretString (a binary secret is not a password)")?;
        parse_secret(text)
    }

    fn lifetime(&self) -> Option<Duration> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "the Secrets Manager secret {} ({})",
            self.secret_id, self.variable
        )
    }
}

/// The credentials in a secret's text: JSON with `password` (and maybe `username`), or
/// the password itself.
pub fn parse_secret(text: &str) -> anyhow::Result<Credentials> {
    #[derive(serde::Deserialize)]
    struct Json {
        username: Option<String>,
        password: Option<SecretString>,
    }
    if text.trim_start().starts_with('{') {
        let json: Json = serde_json::from_str(text)
            .context("the secret starts like JSON but is not a JSON object")?;
        let password = json
            .password
            .context("the secret is JSON without a `password`")?;
        anyhow::ensure!(
            !password.expose_secret().is_empty(),
            "the secret's password is empty"
        );
        return Ok(Credentials {
            username: json.username,
            password,
        });
    }
    anyhow::ensure!(!text.is_empty(), "the secret is empty");
    Ok(Credentials {
        username: None,
        password: text.to_owned().into(),
    })
}

/// ElastiCache IAM authentication (`REDIS_IAM_CACHE_NAME`): a token for the user of
/// `REDIS_URL`, signed again every [`TOKEN_LIFETIME`] and sent to open connections with
/// `AUTH`.
#[derive(Debug)]
pub struct ElastiCacheIam {
    aws: Aws,
    cache_name: String,
    user: String,
    serverless: bool,
}

impl ElastiCacheIam {
    /// The user `user` on the replication group (or, `serverless`, the serverless
    /// cache) `cache_name`. No I/O.
    pub fn new(aws: Aws, cache_name: &str, user: &str, serverless: bool) -> Self {
        Self {
            aws,
            cache_name: cache_name.to_ascii_lowercase(),
            user: user.to_owned(),
            serverless,
        }
    }
}

#[async_trait::async_trait]
impl CredentialSource for ElastiCacheIam {
    async fn fetch(&self) -> anyhow::Result<Credentials> {
        let credentials = self.aws.credentials().await?;
        let region = self.aws.region().await?;
        let token = elasticache_token(
            &self.cache_name,
            &self.user,
            self.serverless,
            &region,
            &credentials,
            SystemTime::now(),
        )?;
        Ok(Credentials {
            username: Some(self.user.clone()),
            password: token.into(),
        })
    }

    fn lifetime(&self) -> Option<Duration> {
        Some(TOKEN_LIFETIME)
    }

    fn describe(&self) -> String {
        format!(
            "an ElastiCache IAM token for {} on {} (REDIS_IAM_CACHE_NAME)",
            self.user, self.cache_name
        )
    }
}

/// MSK IAM (`KAFKA_SASL_MECHANISM=AWS_MSK_IAM`): librdkafka asks for a token before the
/// current one expires, on its own thread.
#[derive(Debug)]
pub struct MskIam {
    aws: Aws,
}

impl MskIam {
    /// Tokens signed with `aws`'s identity, for its region. No I/O.
    pub fn new(aws: Aws) -> Self {
        Self { aws }
    }
}

impl crate::events::kafka::TokenSource for MskIam {
    fn token(&self) -> anyhow::Result<rdkafka::client::OAuthToken> {
        let (credentials, region) = self.aws.credentials_and_region_blocking()?;
        let (token, expires) = msk_token(&region, &credentials, SystemTime::now())?;
        let lifetime_ms = expires
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(rdkafka::client::OAuthToken {
            token: token.expose_secret().to_owned(),
            // MSK takes the identity from the signature; librdkafka wants a name.
            principal_name: "aws-msk-iam".to_owned(),
            lifetime_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use base64::Engine;

    use super::*;

    fn credentials(session_token: Option<&str>) -> AwsCredentials {
        AwsCredentials::new(
            "akid",
            "secret",
            session_token.map(str::to_owned),
            None,
            "test",
        )
    }

    /// 2024-08-26T22:00:00Z, the time of aws-sdk-rds's test vector.
    const AUG_26_2024: u64 = 1_724_709_600;

    #[test]
    fn rds_tokens_match_the_aws_sdk_test_vector() {
        // aws-sdk-rds's own `signing_works` vector: fixed credentials and time, so the
        // signature is fixed. It checks `presign`, which every token here is made with.
        let token = rds_token(
            "prod-instance.us-east-1.rds.amazonaws.com",
            3306,
            "peccy",
            "us-east-1",
            &credentials(None),
            UNIX_EPOCH + Duration::from_secs(AUG_26_2024),
        )
        .unwrap();
        assert_eq!(
            token,
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
    }

    #[test]
    fn presigning_is_deterministic_and_depends_on_every_input() {
        let time = UNIX_EPOCH + Duration::from_secs(AUG_26_2024);
        let sign = |service: &str, region: &str, creds: &AwsCredentials, time| {
            presign(
                "https://example.com/?Action=connect",
                service,
                region,
                creds,
                time,
                TOKEN_VALIDITY,
            )
            .unwrap()
            .to_string()
        };
        let base = sign("elasticache", "us-east-1", &credentials(None), time);
        assert_eq!(
            base,
            sign("elasticache", "us-east-1", &credentials(None), time)
        );
        for other in [
            sign("kafka-cluster", "us-east-1", &credentials(None), time),
            sign("elasticache", "eu-west-1", &credentials(None), time),
            sign(
                "elasticache",
                "us-east-1",
                &credentials(Some("session")),
                time,
            ),
            sign(
                "elasticache",
                "us-east-1",
                &credentials(None),
                time + Duration::from_secs(1),
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn elasticache_tokens_have_the_documented_shape() {
        let time = UNIX_EPOCH + Duration::from_secs(AUG_26_2024);
        let token = elasticache_token(
            "My-Cache",
            "app",
            false,
            "us-east-1",
            &credentials(Some("session-token")),
            time,
        )
        .unwrap();
        // No scheme; the action, the user; temporary credentials carry their token.
        assert!(
            token.starts_with("my-cache/?Action=connect&User=app&X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            "{token}"
        );
        for part in [
            "X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Felasticache%2Faws4_request",
            "X-Amz-Date=20240826T220000Z",
            "X-Amz-Expires=900",
            "X-Amz-Security-Token=session-token",
            "X-Amz-Signature=",
        ] {
            assert!(token.contains(part), "{part} missing in {token}");
        }
        let serverless =
            elasticache_token("c", "app", true, "us-east-1", &credentials(None), time).unwrap();
        assert!(
            serverless.starts_with("c/?Action=connect&User=app&ResourceType=ServerlessCache&"),
            "{serverless}"
        );
    }

    #[test]
    fn msk_tokens_are_base64url_presigned_urls_with_their_expiry() {
        let time = UNIX_EPOCH + Duration::from_secs(AUG_26_2024);
        let (token, expires) = msk_token("us-west-2", &credentials(None), time).unwrap();
        assert_eq!(expires, time + TOKEN_VALIDITY);
        let token = token.expose_secret();
        assert!(
            !token.contains(['=', '+', '/']),
            "base64url without padding"
        );
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://kafka.us-west-2.amazonaws.com/?Action=kafka-cluster%3AConnect\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=akid%2F20240826%2Fus-west-2%2Fkafka-cluster%2Faws4_request\
                 &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
                 &X-Amz-Signature="
            ),
            "{url}"
        );
        assert!(url.ends_with(concat!("&User-Agent=missive%2F", env!("CARGO_PKG_VERSION"))));

        // Credentials that expire first bound the token.
        let short = AwsCredentials::new(
            "akid",
            "secret",
            Some("session".into()),
            Some(time + Duration::from_secs(60)),
            "test",
        );
        let (_, expires) = msk_token("us-west-2", &short, time).unwrap();
        assert_eq!(expires, time + Duration::from_secs(60));
    }

    #[test]
    fn secrets_are_json_with_a_password_or_the_password_itself() {
        let json =
            parse_secret(r#"{"username":"app","password":"p@ss","engine":"mariadb","port":3306}"#);
        // RDS-managed secrets hold more (host, port as a number): ignored.
        let json = json.unwrap();
        assert_eq!(json.username.as_deref(), Some("app"));
        assert_eq!(json.password.expose_secret(), "p@ss");

        let plain = parse_secret("just-the-password").unwrap();
        assert_eq!(plain.username, None);
        assert_eq!(plain.password.expose_secret(), "just-the-password");

        for (bad, why) in [
            (r#"{"username":"app"}"#, "without a `password`"),
            (r#"{"password":""}"#, "password is empty"),
            ("", "is empty"),
            ("{not json", "not a JSON object"),
        ] {
            let err = format!("{:#}", parse_secret(bad).unwrap_err());
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
