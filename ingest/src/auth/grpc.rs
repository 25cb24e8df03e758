//! gRPC: an interceptor in front of each Telemetry service, reading the
//! `authorization` metadata once, when a call starts. Health and
//! reflection have none and stay open.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::{Auth, Caller, Scope};

/// Lets a call through when its key has `needs` (or when auth is off),
/// with the [`Caller`] in the request's extensions.
#[derive(Clone, Debug)]
pub struct Guard {
    auth: Option<Auth>,
    needs: Scope,
}

impl Guard {
    pub fn new(auth: Option<Auth>, needs: Scope) -> Guard {
        Guard { auth, needs }
    }
}

impl Interceptor for Guard {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(auth) = &self.auth else {
            return Ok(request);
        };
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        let caller = auth.check(authorization, self.needs)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The key a call was let in with; `None` when auth is off.
pub fn caller<T>(request: &Request<T>) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}
