//! The client side of the etcd v3 API, shared by the `cairn` CLI, `cairn bench` and the operator.
//!
//! A thin layer over the generated tonic clients: it normalises endpoints the way etcdctl does,
//! dials them in order with a deadline, and raises message limits to etcd's. Callers use the
//! typed gRPC clients directly, so every request field stays reachable.
//!
//! With credentials (`--user`), the client calls Authenticate once after connecting and every
//! request, streams included, carries the token as the `token` metadata clientv3 sends.

use std::path::PathBuf;

use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::rustls::ClientConfig;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::tls::connect::TlsConnector;

use crate::proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};

/// Errors from connecting to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("no endpoint given")]
    NoEndpoints,
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("could not connect to any of {endpoints:?}: {last}")]
    Unreachable {
        endpoints: Vec<String>,
        last: String,
    },
    /// Authenticate failed; carries the server's status (etcd's error text).
    #[error("{}", .0.message())]
    Auth(tonic::Status),
    #[error("the auth token is not valid metadata: {0}")]
    BadToken(String),
}

/// A user name and password to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Adds the auth token (once there is one) to every request as the `token` metadata.
#[derive(Debug, Clone, Default)]
pub struct TokenInterceptor {
    token: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
}

impl TokenInterceptor {
    fn set(&self, token: MetadataValue<Ascii>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = self.token.read().unwrap_or_else(|p| p.into_inner()).clone() {
            req.metadata_mut().insert("token", t);
        }
        Ok(req)
    }
}

/// What the typed clients run on: the channel plus the token interceptor.
pub type Transport = InterceptedService<Channel, TokenInterceptor>;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub dial_timeout: Duration,
    /// Per-request deadline applied to every call on the channel.
    pub request_timeout: Option<Duration>,
    /// TLS for endpoints without a scheme (etcdctl's `--cacert/--cert/--key/...`). `https://`
    /// endpoints always use TLS (the system's CAs when this is `None`), `http://` never does.
    pub tls: Option<ClientTls>,
    /// Authenticate after connecting (etcdctl's `--user`/`--password`).
    pub credentials: Option<Credentials>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(2),
            request_timeout: None,
            tls: None,
            credentials: None,
        }
    }
}

/// A client's TLS settings (etcdctl's global TLS flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA bundle the server's certificate must chain to (default: the system's CAs).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (`--insecure-skip-tls-verify`).
    pub insecure_skip_verify: bool,
}

impl ClientTls {
    /// The rustls config these settings describe (reads the files now).
    pub fn config(&self) -> Result<Arc<ClientConfig>, crate::tls::TlsError> {
        let files = crate::tls::TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            trusted_ca: self.ca_file.clone(),
            client_cert_auth: false,
        };
        let material = crate::tls::Material::read(&files)?;
        Ok(Arc::new(crate::tls::client_config(
            &files,
            &material,
            self.insecure_skip_verify,
        )?))
    }
}

/// Turns etcdctl-style endpoints (`host:port`, `http://host:port`) into URLs tonic can dial.
pub fn normalize_endpoint(endpoint: &str) -> String {
    normalize_endpoint_tls(endpoint, false)
}

/// Like [`normalize_endpoint`]; endpoints without a scheme get `https` when TLS is configured,
/// as clientv3 uses its TLS config for them.
pub fn normalize_endpoint_tls(endpoint: &str, tls: bool) -> String {
    let trimmed = endpoint.trim();
    if trimmed.contains("://") {
        trimmed.to_string()
    } else if tls {
        format!("https://{trimmed}")
    } else {
        format!("http://{trimmed}")
    }
}

/// A connection to one member of a cluster (the first of the endpoints that answers).
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    endpoint: String,
    token: TokenInterceptor,
}

/// Largest message a client accepts: etcd clients send up to 2 MiB and receive without limit.
const MAX_DECODE: usize = i32::MAX as usize;

impl Client {
    /// Dials the endpoints in order and keeps the first connection that succeeds.
    pub async fn connect(endpoints: &[String], opts: &ConnectOptions) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut last = String::new();
        // Built on first use: plaintext endpoints never read the files.
        let mut tls_config: Option<Arc<ClientConfig>> = None;
        for ep in endpoints {
            let url = normalize_endpoint_tls(ep, opts.tls.is_some());
            let https = crate::server::config::is_https(&url);
            let dial_url = crate::tls::connect::plain_scheme(&url);
            let mut endpoint =
                Endpoint::from_shared(dial_url).map_err(|source| ClientError::InvalidEndpoint {
                    endpoint: ep.clone(),
                    source,
                })?;
            endpoint = endpoint
                .connect_timeout(opts.dial_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10));
            if let Some(t) = opts.request_timeout {
                endpoint = endpoint.timeout(t);
            }
            let connecting = if https {
                let config = match &tls_config {
                    Some(c) => c.clone(),
                    None => {
                        let c = opts.tls.clone().unwrap_or_default().config()?;
                        tls_config = Some(c.clone());
                        c
                    }
                };
                let connector = TlsConnector::fixed(config, opts.dial_timeout);
                futures::future::Either::Left(endpoint.connect_with_connector(connector))
            } else {
                futures::future::Either::Right(endpoint.connect())
            };
            match tokio::time::timeout(opts.dial_timeout, connecting).await {
                Ok(Ok(channel)) => {
                    let client = Self {
                        channel,
                        endpoint: url,
                        token: TokenInterceptor::default(),
                    };
                    if let Some(creds) = &opts.credentials {
                        client.authenticate(creds).await?;
                    }
                    return Ok(client);
                }
                Ok(Err(e)) => last = format!("{ep}: {}", with_causes(&e)),
                Err(_) => last = format!("{ep}: dial timeout after {:?}", opts.dial_timeout),
            }
        }
        Err(ClientError::Unreachable {
            endpoints: endpoints.to_vec(),
            last,
        })
    }

    /// The URL of the member this client is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The connection, with the auth token (if any) added to every request.
    pub fn channel(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    /// Gets a token for `creds` and sends it with every later request. As clientv3 does, a
    /// cluster with auth disabled is not an error: requests then go without a token.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<(), ClientError> {
        let req = crate::proto::etcdserverpb::AuthenticateRequest {
            name: creds.user.clone(),
            password: creds.password.clone(),
        };
        match AuthClient::new(self.channel.clone())
            .authenticate(req)
            .await
        {
            Ok(resp) => {
                let token = resp.into_inner().token;
                let value = token
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|e| ClientError::BadToken(e.to_string()))?;
                self.token.set(value);
                Ok(())
            }
            Err(s) if s.message() == "etcdserver: authentication is not enabled" => Ok(()),
            Err(s) => Err(ClientError::Auth(s)),
        }
    }

    pub fn kv(&self) -> KvClient<Transport> {
        KvClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn watch(&self) -> WatchClient<Transport> {
        WatchClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn lease(&self) -> LeaseClient<Transport> {
        LeaseClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn cluster(&self) -> ClusterClient<Transport> {
        ClusterClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn maintenance(&self) -> MaintenanceClient<Transport> {
        MaintenanceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn auth(&self) -> AuthClient<Transport> {
        AuthClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }
}

/// An error and its sources: tonic's transport error alone says only "transport error", the
/// cause (refused, certificate unknown, ...) is what a user needs.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some errors already print their source; don't say it twice.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The end of the key range that covers every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range runs to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("https://a:1"), "https://a:1");
        assert_eq!(normalize_endpoint_tls("a:1", true), "https://a:1");
        assert_eq!(normalize_endpoint_tls("http://a:1", true), "http://a:1");
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }
}
