//! `[serve]`: serving the trained model over HTTP (after a batch run, or while a stream trains).

use std::net::SocketAddr;
use std::path::PathBuf;

use millrace_ml::{Device, Precision};
use serde::{Deserialize, Serialize};

use crate::serve::ServeOptions;
use crate::serve::access::{exposure_refused, read_token_file};
use crate::serve::tls::{TlsFiles, acceptor};
use crate::{Error, Result};

/// Serve the trained model over HTTP when the run ends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// Address to listen on. A non-loopback address (e.g. `0.0.0.0:8080`) needs
    /// [`ServeSpec::auth_token_file`] or [`ServeSpec::allow_unauthenticated`].
    #[serde(default = "default_addr")]
    pub addr: SocketAddr,
    /// Also serve the KServe v2 gRPC protocol on this address (none by default); the same
    /// rules for tokens and TLS hold as for [`ServeSpec::addr`].
    #[serde(default)]
    pub grpc_addr: Option<SocketAddr>,
    /// Most instances accepted in one request.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Where the forward pass runs: `cpu` (default), `cuda` (= `cuda:0`) or `cuda:N` (needs a
    /// build with `--features cuda`). Requests are batched the same way on either.
    #[serde(default)]
    pub device: Device,
    /// Precision of a GPU's matrix products: `f32` (default) or `bf16` (needs a `cuda` device).
    #[serde(default)]
    pub precision: Precision,
    /// Where compiled GPU kernels are cached (default: `$MILLRACE_KERNEL_CACHE`, else
    /// `~/.cache/millrace/kernels`).
    #[serde(default)]
    pub kernel_cache: Option<PathBuf>,
    /// A file holding the bearer token every request but the health checks must send
    /// (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// Serve a non-loopback [`ServeSpec::addr`] without a token (refused otherwise).
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Serve HTTPS with this PEM certificate chain (with [`ServeSpec::tls_key`]).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of [`ServeSpec::tls_cert`].
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl ServeSpec {
    /// Where the served models' forward passes run.
    pub fn forward(&self) -> crate::serve::ForwardDevice {
        crate::serve::ForwardDevice {
            device: self.device,
            precision: self.precision,
            kernel_cache: self.kernel_cache.clone(),
        }
    }

    /// Checks, before the server starts, that the forward pass can run on
    /// [`ServeSpec::device`] in [`ServeSpec::precision`]; errors name `serve.device` or
    /// `serve.precision`.
    pub fn validate_device(&self) -> Result<()> {
        self.forward().check("serve")
    }

    /// The TLS files, when both are set; an error naming the missing key when only one is.
    fn tls(&self) -> Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles::new(cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::config(
                "serve.tls_key",
                "missing: serve.tls_cert needs the certificate's private key (a PEM file) in serve.tls_key",
            )),
            (None, Some(_)) => Err(Error::config(
                "serve.tls_cert",
                "missing: serve.tls_key needs its certificate chain (a PEM file) in serve.tls_cert",
            )),
        }
    }

    /// Checks the address, the token file and the TLS files before any work starts; errors
    /// name the key to change.
    pub fn validate(&self) -> Result<()> {
        self.options().map(|_| ())
    }

    /// The server options of this section: the token read from its file, the TLS files
    /// checked. Errors name `serve.addr`, `serve.auth_token_file`, `serve.tls_cert` or
    /// `serve.tls_key`.
    pub fn options(&self) -> Result<ServeOptions> {
        let auth_token = match &self.auth_token_file {
            Some(path) => Some(
                read_token_file(path)
                    .map_err(|e| Error::config("serve.auth_token_file", e.to_string()))?,
            ),
            None => None,
        };
        let addrs = std::iter::once(("serve.addr", self.addr))
            .chain(self.grpc_addr.map(|a| ("serve.grpc_addr", a)));
        for (key, addr) in addrs {
            let Some(why) =
                exposure_refused(&addr, auth_token.is_some(), self.allow_unauthenticated)
            else {
                continue;
            };
            return Err(Error::config(
                key,
                format!(
                    "{why}. Set serve.auth_token_file = \"FILE\" (a file holding the token), listen on 127.0.0.1, or set serve.allow_unauthenticated = true to serve it open on purpose"
                ),
            ));
        }
        let tls = self.tls()?;
        if let Some(files) = &tls {
            acceptor(&files.cert, &files.key).map_err(|e| {
                let key = match &e {
                    Error::Tls { file, .. } if *file == files.key => "serve.tls_key",
                    _ => "serve.tls_cert",
                };
                Error::config(key, e.to_string())
            })?;
        }
        Ok(ServeOptions {
            max_rows: self.max_rows,
            grpc_addr: self.grpc_addr,
            auth_token,
            allow_unauthenticated: self.allow_unauthenticated,
            tls,
            ..ServeOptions::default()
        })
    }
}

fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_rows() -> usize {
    10_000
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            addr: default_addr(),
            grpc_addr: None,
            max_rows: default_max_rows(),
            device: Device::Cpu,
            precision: Precision::F32,
            kernel_cache: None,
            auth_token_file: None,
            allow_unauthenticated: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}
