//! `istio.v1.auth.IstioCertificateService`: authenticated callers send a CSR and get a
//! certificate for their own identity.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::authn::FAILED;
use super::authority::Authority;
use super::metrics::Metrics;
use super::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use super::pb::{IstioCertificateRequest, IstioCertificateResponse};
use super::secure::AuthFailure;
use super::{csr, Error};
use crate::security::Caller;

/// Metadata key upstream uses for node agents requesting another workload's certificate.
const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The CA gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct CaService {
    authority: Arc<Authority>,
    metrics: Metrics,
}

impl CaService {
    pub fn new(authority: Arc<Authority>, metrics: Metrics) -> Self {
        CaService { authority, metrics }
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let m = &self.metrics;
        m.csr_count.inc();
        let Some(Caller(identity)) = request.extensions().get::<Caller>().cloned() else {
            m.authentication_failure_count.inc();
            let reason = request
                .extensions()
                .get::<AuthFailure>()
                .map(|f| f.0.clone())
                .unwrap_or_else(|| "no credentials".to_owned());
            warn!(%reason, "refusing a CSR from an unauthenticated caller");
            return Err(Status::unauthenticated(format!(
                "request authenticate failure: {FAILED}"
            )));
        };
        let req = request.into_inner();
        if req
            .metadata
            .as_ref()
            .is_some_and(|md| md.fields.contains_key(IMPERSONATED_IDENTITY))
        {
            m.authentication_failure_count.inc();
            return Err(Status::unauthenticated(format!(
                "request authenticate failure: {identity} may not request certificates for \
                 another identity ({IMPERSONATED_IDENTITY} is not supported)"
            )));
        }
        let csr = csr::parse(&req.csr).map_err(|e| {
            m.csr_parsing_err_count.inc();
            warn!(caller = %identity, error = %e, "refused CSR");
            Status::invalid_argument(e.to_string())
        })?;
        let ttl = self.authority.ttl_for(req.validity_duration).map_err(|e| {
            m.sign_error("ttl_error");
            warn!(caller = %identity, error = %e, "refused CSR");
            Status::invalid_argument(e.to_string())
        })?;
        let chain = self
            .authority
            .sign_workload(&csr, &identity, ttl)
            .map_err(|e| {
                m.sign_error(sign_error_label(&e));
                warn!(caller = %identity, error = %e, "signing failed");
                Status::internal(format!("signing the certificate failed: {e}"))
            })?;
        m.success_cert_issuance_count.inc();
        info!(
            caller = %identity,
            ttl = ?ttl,
            requested_sans = ?csr.requested_sans,
            "issued workload certificate"
        );
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

fn sign_error_label(e: &Error) -> &'static str {
    match e {
        Error::TtlTooLong { .. } => "ttl_error",
        Error::Csr(_) => "csr_error",
        _ => "cert_chain_error",
    }
}
