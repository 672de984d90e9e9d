//! The token and ACL RPCs of `sluice.v1.Admin`.

use sluice_core::auth::{AclEntry, Effect, Operation, Pattern, ResourceKind, TokenInfo};
use sluice_proto::v1 as pb;
use tonic::{Request, Status};

use super::admin::AdminService;
use crate::access::Caller;
use crate::status::to_status;

fn invalid(message: impl Into<String>) -> Status {
    to_status(sluice_core::Error::InvalidArgument(message.into()))
}

fn token_info(info: TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo { id: info.id, principal: info.principal, superuser: info.superuser, created_ms: info.created_ms }
}

fn operation(value: i32) -> Result<Operation, Status> {
    use pb::AclOperation as O;
    Ok(match O::try_from(value) {
        Ok(O::Produce) => Operation::Produce,
        Ok(O::Consume) => Operation::Consume,
        Ok(O::Describe) => Operation::Describe,
        Ok(O::Create) => Operation::Create,
        Ok(O::Alter) => Operation::Alter,
        Ok(O::Delete) => Operation::Delete,
        Ok(O::GroupAdmin) => Operation::GroupAdmin,
        Ok(O::DeadLetterAdmin) => Operation::DeadLetterAdmin,
        Ok(O::AclAdmin) => Operation::AclAdmin,
        Ok(O::All) => Operation::All,
        Ok(O::Unspecified) | Err(_) => {
            return Err(invalid(format!("ACL operation {value} is not one of the operations")));
        }
    })
}

fn operation_to_pb(operation: Operation) -> pb::AclOperation {
    use pb::AclOperation as O;
    match operation {
        Operation::Produce => O::Produce,
        Operation::Consume => O::Consume,
        Operation::Describe => O::Describe,
        Operation::Create => O::Create,
        Operation::Alter => O::Alter,
        Operation::Delete => O::Delete,
        Operation::GroupAdmin => O::GroupAdmin,
        Operation::DeadLetterAdmin => O::DeadLetterAdmin,
        Operation::AclAdmin => O::AclAdmin,
        Operation::All => O::All,
    }
}

/// An ACL entry from the wire.
pub fn acl(acl: pb::Acl) -> Result<AclEntry, Status> {
    let effect = match pb::AclEffect::try_from(acl.effect) {
        Ok(pb::AclEffect::Allow) => Effect::Allow,
        Ok(pb::AclEffect::Deny) => Effect::Deny,
        _ => return Err(invalid("ACL effect must be ALLOW or DENY")),
    };
    let kind = match pb::AclResource::try_from(acl.resource) {
        Ok(pb::AclResource::Topic) => ResourceKind::Topic,
        Ok(pb::AclResource::Group) => ResourceKind::Group,
        Ok(pb::AclResource::Cluster) => ResourceKind::Cluster,
        _ => return Err(invalid("ACL resource must be TOPIC, GROUP or CLUSTER")),
    };
    let pattern = match pb::AclPatternType::try_from(acl.pattern) {
        Ok(pb::AclPatternType::Literal) => Pattern::Literal(acl.name),
        Ok(pb::AclPatternType::Prefix) => Pattern::Prefix(acl.name),
        Ok(pb::AclPatternType::Any) => Pattern::Any,
        _ => return Err(invalid("ACL pattern must be LITERAL, PREFIX or ANY")),
    };
    Ok(AclEntry { id: 0, effect, principal: acl.principal, kind, pattern, operation: operation(acl.operation)? })
}

/// An ACL entry for the wire.
pub fn acl_to_pb(entry: AclEntry) -> pb::Acl {
    let (pattern, name) = match entry.pattern {
        Pattern::Literal(name) => (pb::AclPatternType::Literal, name),
        Pattern::Prefix(name) => (pb::AclPatternType::Prefix, name),
        Pattern::Any => (pb::AclPatternType::Any, String::new()),
    };
    pb::Acl {
        id: entry.id,
        effect: if entry.effect == Effect::Allow { pb::AclEffect::Allow } else { pb::AclEffect::Deny } as i32,
        principal: entry.principal,
        resource: match entry.kind {
            ResourceKind::Topic => pb::AclResource::Topic,
            ResourceKind::Group => pb::AclResource::Group,
            ResourceKind::Cluster => pb::AclResource::Cluster,
        } as i32,
        pattern: pattern as i32,
        name,
        operation: operation_to_pb(entry.operation) as i32,
    }
}

/// Runs a store change on the blocking pool (it fsyncs), then wakes open streams to re-check.
async fn change<T: Send + 'static>(
    service: &AdminService,
    f: impl FnOnce(&sluice_core::auth::Security) -> sluice_core::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let security = std::sync::Arc::clone(service.access.security());
    let done = tokio::task::spawn_blocking(move || {
        let result = f(&security);
        security.changed();
        result
    })
    .await
    .map_err(|e| Status::internal(format!("security task failed: {e}")))?;
    done.map_err(to_status)
}

impl AdminService {
    fn allow_admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.access.caller(request)?;
        self.access.check(&caller, Operation::AclAdmin, ResourceKind::Cluster, "")?;
        Ok(caller)
    }

    pub(crate) async fn create_token_rpc(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<pb::CreateTokenResponse, Status> {
        let caller = self.allow_admin(&request)?;
        let r = request.into_inner();
        if r.superuser && matches!(&caller, Caller::Principal(p) if !p.superuser) {
            return Err(Status::permission_denied(format!(
                "principal '{}' may not create a superuser token: only a superuser may",
                caller.name()
            )));
        }
        let (info, token) = change(self, move |s| s.tokens.create(&r.principal, r.superuser)).await?;
        tracing::info!(by = caller.name(), id = %info.id, principal = %info.principal, superuser = info.superuser, "token created");
        Ok(pb::CreateTokenResponse { info: Some(token_info(info)), token })
    }

    pub(crate) fn list_tokens_rpc(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<pb::ListTokensResponse, Status> {
        self.allow_admin(&request)?;
        Ok(pb::ListTokensResponse {
            tokens: self.access.security().tokens.list().into_iter().map(token_info).collect(),
        })
    }

    pub(crate) async fn revoke_token_rpc(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<pb::RevokeTokenResponse, Status> {
        let caller = self.allow_admin(&request)?;
        let id = request.into_inner().id;
        let wanted = id.clone();
        if !change(self, move |s| s.tokens.revoke(&wanted)).await? {
            return Err(Status::not_found(format!("no token has the id '{id}'")));
        }
        tracing::info!(by = caller.name(), %id, "token revoked");
        Ok(pb::RevokeTokenResponse {})
    }

    pub(crate) async fn add_acl_rpc(&self, request: Request<pb::AddAclRequest>) -> Result<pb::AddAclResponse, Status> {
        let caller = self.allow_admin(&request)?;
        let entry = acl(request.into_inner().acl.ok_or_else(|| invalid("AddAcl needs an acl"))?)?;
        let added = change(self, move |s| s.acls.add(entry)).await?;
        tracing::info!(by = caller.name(), ?added, "ACL added");
        Ok(pb::AddAclResponse { acl: Some(acl_to_pb(added)) })
    }

    pub(crate) fn list_acls_rpc(&self, request: Request<pb::ListAclsRequest>) -> Result<pb::ListAclsResponse, Status> {
        self.allow_admin(&request)?;
        Ok(pb::ListAclsResponse { acls: self.access.security().acls.list().into_iter().map(acl_to_pb).collect() })
    }

    pub(crate) async fn remove_acl_rpc(
        &self,
        request: Request<pb::RemoveAclRequest>,
    ) -> Result<pb::RemoveAclResponse, Status> {
        let caller = self.allow_admin(&request)?;
        let id = request.into_inner().id;
        if !change(self, move |s| s.acls.remove(id)).await? {
            return Err(Status::not_found(format!("no ACL entry has the id {id}")));
        }
        tracing::info!(by = caller.name(), id, "ACL removed");
        Ok(pb::RemoveAclResponse {})
    }
}
