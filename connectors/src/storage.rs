//! Where datasets live: local paths, `file://`, `s3://`, `gs://`, `az://`/`abfss://` and `http(s)://`
//! URLs, all behind the [`object_store`] crate.
//!
//! [`StorageLocation::parse`] turns a URL (or a plain path) plus [`StorageOptions`] into a store and a
//! root path inside it. S3 settings come, in this order of precedence, from the options (a
//! pipeline's `[storage]` section), the standard `AWS_*` environment variables, and the AWS shared
//! config and credentials files (`AWS_PROFILE` or `profile`, default `default`). Every store
//! retries transient failures (5xx, timeouts, connection resets) with exponential backoff.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{Error, Result};

/// Connection settings for object stores; every field is optional.
///
/// In a pipeline file this is the `[storage]` section:
///
/// ```toml
/// [storage]
/// endpoint = "http://127.0.0.1:9000"   # an S3-compatible server; implies path-style requests
/// region = "us-east-1"
/// profile = "etl"                      # a profile of ~/.aws/credentials and ~/.aws/config
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// Endpoint URL of an S3-compatible server (e.g. `http://127.0.0.1:9000`). Setting it switches
    /// to path-style requests unless `virtual_hosted_style = true`.
    pub endpoint: Option<String>,
    /// Region (S3).
    pub region: Option<String>,
    /// Access key id (S3). Prefer the environment or a profile over putting secrets in files.
    pub access_key_id: Option<String>,
    /// Secret access key (S3).
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials (S3).
    pub session_token: Option<String>,
    /// AWS profile to read from the shared config and credentials files.
    pub profile: Option<String>,
    /// Allow plain `http://` endpoints (default: true when the endpoint starts with `http://`).
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.endpoint`) instead of path-style (`endpoint/bucket`).
    pub virtual_hosted_style: Option<bool>,
    /// Send unsigned requests (public buckets).
    #[serde(default)]
    pub anonymous: bool,
    /// Retries of a failed request before giving up (default 10).
    pub max_retries: Option<usize>,
    /// Give up retrying a request after this many seconds (default 180).
    pub retry_timeout_s: Option<f64>,
    /// Timeout of one request, in seconds (default 30).
    pub request_timeout_s: Option<f64>,
    /// Timeout to establish a connection, in seconds (default 5).
    pub connect_timeout_s: Option<f64>,
    /// First retry delay in milliseconds (default 100; doubles each retry up to 15 s).
    pub initial_backoff_ms: Option<u64>,
    /// Any other `object_store` setting by its name (e.g. `google_service_account`,
    /// `azure_storage_account_name`, `aws_sse_kms_key_id`), passed through as is.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl StorageOptions {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(self.initial_backoff_ms.unwrap_or(100)),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: self.max_retries.unwrap_or(10),
            retry_timeout: secs(self.retry_timeout_s, 180.0),
        }
    }

    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(secs(self.request_timeout_s, 30.0))
            .with_connect_timeout(secs(self.connect_timeout_s, 5.0))
    }
}

fn secs(value: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(
        value
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(default),
    )
}

/// The kind of store a location is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The local filesystem.
    Local,
    /// Amazon S3 or an S3-compatible server.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage / ADLS Gen2.
    Azure,
    /// A plain HTTP(S) server (WebDAV for writes).
    Http,
}

/// A dataset root: the store it is in, the path inside the store, and the URL it was given as.
#[derive(Clone, Debug)]
pub struct StorageLocation {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The root path inside the store (no leading or trailing `/`).
    pub root: ObjectPath,
    /// The location as a URL without a trailing `/`, for messages: `s3://bucket/prefix`, or the
    /// absolute filesystem path for local data.
    pub url: String,
    /// Which kind of store.
    pub kind: StoreKind,
    /// For local data: the absolute filesystem path of the root.
    pub local_root: Option<PathBuf>,
}

impl StorageLocation {
    /// Parses `location` (a URL or a plain filesystem path) and builds its store.
    ///
    /// Local paths need not exist yet (a sink creates them). Nothing is contacted here: a missing
    /// bucket or a bad credential shows on first use, as an [`Error::Store`] naming the URL.
    pub fn parse(location: &str, options: &StorageOptions) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: location.to_string(),
            reason,
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid(
                "it is empty; give a path or a URL such as s3://bucket/prefix".into(),
            ));
        }
        let url = match Url::parse(trimmed) {
            // "C:\..." parses as scheme "c"; single letters are drive letters, not schemes.
            Ok(url) if url.scheme().len() > 1 => Some(url),
            _ => None,
        };
        let Some(url) = url else {
            return Self::local(PathBuf::from(trimmed), location);
        };
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not a valid file:// URL of an absolute path".into()))?;
                Self::local(path, location)
            }
            "s3" | "s3a" => Self::s3(&url, options, location),
            "gs" => Self::via_parse_url(&url, options, location, StoreKind::Gcs),
            "az" | "adl" | "azure" | "abfs" | "abfss" => {
                Self::via_parse_url(&url, options, location, StoreKind::Azure)
            }
            "http" | "https" => Self::via_parse_url(&url, options, location, StoreKind::Http),
            other => Err(invalid(format!(
                "unknown scheme `{other}://`; use a path, file://, s3://, gs://, az://, abfss:// or https://"
            ))),
        }
    }

    fn local(path: PathBuf, given: &str) -> Result<Self> {
        let absolute = std::path::absolute(&path).map_err(|e| Error::io(&path, "resolve", e))?;
        // Resolve symlinks where the path exists, so listings and roots agree.
        let absolute = std::fs::canonicalize(&absolute).unwrap_or(absolute);
        let root = ObjectPath::from_absolute_path(&absolute).map_err(|e| Error::InvalidUrl {
            url: given.to_string(),
            reason: format!("not a usable local path: {e}"),
        })?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            root,
            url: absolute.display().to_string(),
            kind: StoreKind::Local,
            local_root: Some(absolute),
        })
    }

    fn s3(url: &Url, options: &StorageOptions, given: &str) -> Result<Self> {
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(Error::InvalidUrl {
                url: given.to_string(),
                reason: "no bucket: write s3://bucket/prefix".into(),
            });
        }
        let mut builder = AmazonS3Builder::new().with_bucket_name(&bucket);
        // Lowest precedence first: the profile files, then the environment, then the options.
        let profile = options
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".to_string());
        let profile_settings = aws_profile(&profile)?;
        let profile_endpoint = profile_settings
            .iter()
            .find(|(key, _)| *key == AmazonS3ConfigKey::Endpoint)
            .map(|(_, value)| value.clone());
        for (key, value) in profile_settings {
            builder = builder.with_config(key, value);
        }
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_")
                && key != "AWS_PROFILE"
                && let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(config, value);
            }
        }
        for (key, value) in &options.options {
            let config = key
                .parse::<AmazonS3ConfigKey>()
                .map_err(|e| Error::InvalidUrl {
                    url: given.to_string(),
                    reason: format!("unknown S3 option `{key}` in [storage.options]: {e}"),
                })?;
            builder = builder.with_config(config, value.clone());
        }
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        let endpoint = options
            .endpoint
            .clone()
            .or(env_endpoint)
            .or(profile_endpoint);
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region.clone());
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key.clone());
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret.clone());
        }
        if let Some(token) = &options.session_token {
            builder = builder.with_token(token.clone());
        }
        let allow_http = options.allow_http.unwrap_or_else(|| {
            endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
                || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1")
        });
        let virtual_hosted = options.virtual_hosted_style.unwrap_or(endpoint.is_none());
        let store = builder
            .with_allow_http(allow_http)
            .with_virtual_hosted_style_request(virtual_hosted)
            .with_skip_signature(options.anonymous)
            .with_retry(options.retry())
            .with_client_options(options.client(allow_http))
            .build()
            .map_err(|e| Error::InvalidUrl {
                url: given.to_string(),
                reason: format!("cannot configure S3: {e}"),
            })?;
        let root = ObjectPath::parse(url.path()).map_err(|e| Error::InvalidUrl {
            url: given.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            store: Arc::new(store),
            url: join_url(&format!("s3://{bucket}"), &root),
            root,
            kind: StoreKind::S3,
            local_root: None,
        })
    }

    fn via_parse_url(
        url: &Url,
        options: &StorageOptions,
        given: &str,
        kind: StoreKind,
    ) -> Result<Self> {
        let mut settings: Vec<(String, String)> = options.options.clone().into_iter().collect();
        if let Some(allow) = options.allow_http {
            settings.push(("allow_http".into(), allow.to_string()));
        }
        if let Some(t) = options.request_timeout_s {
            settings.push(("timeout".into(), format!("{t}s")));
        }
        if let Some(t) = options.connect_timeout_s {
            settings.push(("connect_timeout".into(), format!("{t}s")));
        }
        let (store, root) =
            object_store::parse_url_opts(url, settings).map_err(|e| Error::InvalidUrl {
                url: given.to_string(),
                reason: format!("cannot configure the store: {e}"),
            })?;
        let base = &url[..url::Position::BeforePath];
        Ok(Self {
            store: Arc::from(store),
            url: join_url(base, &root),
            root,
            kind,
            local_root: None,
        })
    }

    /// The display URL of an object below this location (`s3://bucket/prefix/file`, or a local
    /// filesystem path).
    pub fn url_of(&self, object: &ObjectPath) -> String {
        match &self.local_root {
            Some(_) => format!("/{object}"),
            None => {
                let base = self
                    .url
                    .strip_suffix(self.root.as_ref())
                    .unwrap_or(&self.url);
                format!(
                    "{}{}",
                    base.trim_end_matches('/'),
                    format_args!("/{object}")
                )
            }
        }
    }

    /// `true` for the local filesystem.
    pub fn is_local(&self) -> bool {
        self.kind == StoreKind::Local
    }

    /// A child location (`root/name`), sharing the store.
    pub fn child(&self, name: &str) -> Self {
        let root = self.root.clone().join(name);
        Self {
            store: Arc::clone(&self.store),
            url: self.url_of(&root),
            local_root: self.local_root.as_ref().map(|p| p.join(name)),
            kind: self.kind,
            root,
        }
    }
}

fn join_url(base: &str, root: &ObjectPath) -> String {
    if root.as_ref().is_empty() {
        base.trim_end_matches('/').to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), root)
    }
}

/// Settings of one profile from the AWS shared credentials and config files
/// (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, default `~/.aws/credentials` and
/// `~/.aws/config`). Missing files are fine; a named profile that exists nowhere is an error
/// (unless it is `default`).
fn aws_profile(profile: &str) -> Result<Vec<(AmazonS3ConfigKey, String)>> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let mut found = false;
    let mut settings = Vec::new();
    let sources = [
        (file("AWS_CONFIG_FILE", "config"), true),
        (file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), false),
    ];
    for (path, is_config) in sources {
        let Some(path) = path else { continue };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let section = if is_config && profile != "default" {
            format!("profile {profile}")
        } else {
            profile.to_string()
        };
        if let Some(values) = ini_section(&text, &section) {
            found = true;
            for (key, value) in values {
                let config = match key.as_str() {
                    "aws_access_key_id" => AmazonS3ConfigKey::AccessKeyId,
                    "aws_secret_access_key" => AmazonS3ConfigKey::SecretAccessKey,
                    "aws_session_token" => AmazonS3ConfigKey::Token,
                    "region" => AmazonS3ConfigKey::Region,
                    "endpoint_url" => AmazonS3ConfigKey::Endpoint,
                    _ => continue,
                };
                settings.push((config, value));
            }
        }
    }
    if !found && profile != "default" {
        return Err(Error::InvalidUrl {
            url: format!("profile `{profile}`"),
            reason: "the AWS profile exists in neither ~/.aws/config nor ~/.aws/credentials \
                     (nor AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
                .into(),
        });
    }
    Ok(settings)
}

/// The `key = value` pairs of `[section]` in an INI text, or `None` when the section is absent.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<String> = None;
    let mut values = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            if current.as_deref() == Some(section) && values.is_none() {
                values = Some(Vec::new());
            }
            continue;
        }
        if current.as_deref() == Some(section)
            && let (Some((key, value)), Some(values)) = (line.split_once('='), values.as_mut())
        {
            values.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls() {
        let loc =
            StorageLocation::parse("/tmp/millrace-x/data", &StorageOptions::default()).unwrap();
        assert_eq!(loc.kind, StoreKind::Local);
        assert_eq!(loc.root.as_ref(), "tmp/millrace-x/data");
        assert_eq!(loc.url, "/tmp/millrace-x/data");
        let f = StorageLocation::parse("file:///tmp/millrace-x/data", &StorageOptions::default())
            .unwrap();
        assert_eq!(f.root, loc.root);
        let child = loc.child("a=1");
        assert_eq!(child.url, "/tmp/millrace-x/data/a=1");
        assert_eq!(
            loc.url_of(&ObjectPath::from("tmp/millrace-x/data/part-0.parquet")),
            "/tmp/millrace-x/data/part-0.parquet"
        );
    }

    #[test]
    fn s3_urls_with_an_endpoint_are_path_style() {
        let options = StorageOptions {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..StorageOptions::default()
        };
        let loc = StorageLocation::parse("s3://bucket/etl/out/", &options).unwrap();
        assert_eq!(loc.kind, StoreKind::S3);
        assert_eq!(loc.root.as_ref(), "etl/out");
        assert_eq!(loc.url, "s3://bucket/etl/out");
        assert_eq!(
            loc.url_of(&ObjectPath::from("etl/out/x=1/part-0.parquet")),
            "s3://bucket/etl/out/x=1/part-0.parquet"
        );
        assert_eq!(loc.child("_SUCCESS").url, "s3://bucket/etl/out/_SUCCESS");
        let root = StorageLocation::parse("s3://bucket", &options).unwrap();
        assert_eq!(root.url, "s3://bucket");
    }

    #[test]
    fn gcs_and_azure_urls_build_their_stores() {
        let gcs =
            StorageLocation::parse("gs://bucket/etl/out", &StorageOptions::default()).unwrap();
        assert_eq!(
            (gcs.kind, gcs.url.as_str()),
            (StoreKind::Gcs, "gs://bucket/etl/out")
        );
        assert_eq!(gcs.root.as_ref(), "etl/out");
        let options = StorageOptions {
            options: BTreeMap::from([(
                "azure_storage_account_name".to_string(),
                "acct".to_string(),
            )]),
            ..StorageOptions::default()
        };
        let az = StorageLocation::parse("az://container/etl/out", &options).unwrap();
        assert_eq!((az.kind, az.root.as_ref()), (StoreKind::Azure, "etl/out"));
        assert_eq!(az.url, "az://container/etl/out");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = StorageLocation::parse("ftp://host/x", &StorageOptions::default()).unwrap_err();
        assert!(err.to_string().contains("unknown scheme `ftp://`"), "{err}");
        let err = StorageLocation::parse("  ", &StorageOptions::default()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let options = StorageOptions {
            options: BTreeMap::from([("no_such_option".to_string(), "1".to_string())]),
            ..StorageOptions::default()
        };
        let err = StorageLocation::parse("s3://b/x", &options).unwrap_err();
        assert!(err.to_string().contains("no_such_option"), "{err}");
    }

    #[test]
    fn ini_sections() {
        let text = "[default]\naws_access_key_id = A\n\n[profile etl]\nregion=eu-west-1\n# c\nendpoint_url = http://x\n";
        assert_eq!(
            ini_section(text, "default"),
            Some(vec![("aws_access_key_id".into(), "A".into())])
        );
        assert_eq!(
            ini_section(text, "profile etl"),
            Some(vec![
                ("region".into(), "eu-west-1".into()),
                ("endpoint_url".into(), "http://x".into())
            ])
        );
        assert_eq!(ini_section(text, "nope"), None);
    }
}
