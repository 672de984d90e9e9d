//! `sluice.v1.Admin`.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_core::Broker;
use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use sluice_core::auth::{Operation as Op, ResourceKind};

use super::unary;
use crate::access::{Access, Caller};
use crate::metrics::Metrics;
use crate::status::to_status;
use crate::{convert, convert_dead_letter, convert_group};

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) inflight: Arc<crate::inflight::Inflight>,
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) access: Access,
    /// TLS on the gRPC port, and client certificates required.
    pub(crate) tls: (bool, bool),
}

const TOPIC: ResourceKind = ResourceKind::Topic;
const GROUP: ResourceKind = ResourceKind::Group;
const CLUSTER: ResourceKind = ResourceKind::Cluster;

impl AdminService {
    /// The caller of `request` if it may do `operation` on `kind`/`name`.
    fn allow<T>(&self, request: &Request<T>, operation: Op, kind: ResourceKind, name: &str) -> Result<Caller, Status> {
        let caller = self.access.caller(request)?;
        self.access.check(&caller, operation, kind, name)?;
        Ok(caller)
    }

    async fn create(&self, request: pb::CreateTopicRequest) -> Result<pb::CreateTopicResponse, Status> {
        let change = convert::topic_config_change(&request.config.unwrap_or_default())?;
        let config = change.applied_to(&self.broker.config().topic_defaults);
        let topic = self.broker.create_topic(&request.name, request.partitions, config).await.map_err(to_status)?;
        Ok(pb::CreateTopicResponse { topic: Some(convert::topic_info(&topic)) })
    }

    async fn alter(&self, request: pb::AlterTopicConfigRequest) -> Result<pb::AlterTopicConfigResponse, Status> {
        let change = convert::topic_config_change(&request.config.unwrap_or_default())?;
        let topic = self.broker.alter_topic_config(&request.name, &change).await.map_err(to_status)?;
        Ok(pb::AlterTopicConfigResponse { topic: Some(convert::topic_info(&topic)) })
    }
}

impl AdminService {
    fn describe(&self, name: &str) -> Result<pb::DescribeTopicResponse, Status> {
        let topic = self.broker.topic(name).map_err(to_status)?;
        let description = self.broker.describe_topic(name).map_err(to_status)?;
        let partitions = description
            .partitions
            .into_iter()
            .map(|p| pb::PartitionInfo {
                partition: p.id,
                start_offset: p.stats.start_offset,
                end_offset: p.stats.end_offset,
                size_bytes: p.stats.size_bytes,
                segments: p.stats.segment_count as u32,
                poisoned: p.poisoned.unwrap_or_default(),
                damaged: p.damage.iter().map(convert::damaged_range).collect(),
            })
            .collect();
        Ok(pb::DescribeTopicResponse { topic: Some(convert::topic_info(&topic)), partitions })
    }

    fn info(&self) -> pb::BrokerInfoResponse {
        pb::BrokerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.broker.uptime().as_secs(),
            listen_address: self.grpc_addr.to_string(),
            http_address: self.http_addr.to_string(),
            data_dir: self.broker.config().data_dir.display().to_string(),
            data_bytes: self.broker.data_bytes(),
            topics: self.broker.topics().len() as u32,
            tls: self.tls.0,
            client_certificates_required: self.tls.1,
            authentication: self.access.enabled(),
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let allowed = self.allow(&request, Op::Create, TOPIC, &request.get_ref().name);
        let create = async {
            allowed?;
            self.create(request.into_inner()).await
        };
        unary(&self.metrics, &self.inflight, "CreateTopic", create).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let allowed = self.allow(&request, Op::Delete, TOPIC, &request.get_ref().name);
        let delete = async {
            allowed?;
            self.broker.delete_topic(&request.get_ref().name).await.map_err(to_status)
        };
        unary(&self.metrics, &self.inflight, "DeleteTopic", async { delete.await.map(|()| pb::DeleteTopicResponse {}) })
            .await
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let caller = self.access.caller(&request);
        let list = async {
            // Only what the caller may describe is listed.
            let caller = caller?;
            let topics = self.broker.topics();
            let visible = topics.iter().filter(|t| self.access.may(&caller, Op::Describe, TOPIC, t.name()));
            Ok(pb::ListTopicsResponse { topics: visible.map(|t| convert::topic_info(t)).collect() })
        };
        unary(&self.metrics, &self.inflight, "ListTopics", list).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let allowed = self.allow(&request, Op::Describe, TOPIC, &request.get_ref().name);
        let describe = async {
            allowed?;
            self.describe(&request.get_ref().name)
        };
        unary(&self.metrics, &self.inflight, "DescribeTopic", describe).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        let allowed = self.allow(&request, Op::Alter, TOPIC, &request.get_ref().name);
        let alter = async {
            allowed?;
            self.alter(request.into_inner()).await
        };
        unary(&self.metrics, &self.inflight, "AlterTopicConfig", alter).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        let allowed = self.allow(&request, Op::Alter, TOPIC, &request.get_ref().name);
        let request = request.into_inner();
        let add = async {
            allowed?;
            let topic = self.broker.add_partitions(&request.name, request.partitions).await.map_err(to_status)?;
            Ok(pb::AddPartitionsResponse { topic: Some(convert::topic_info(&topic)) })
        };
        unary(&self.metrics, &self.inflight, "AddPartitions", add).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = self.access.caller(&request);
        let list = async {
            let caller = caller?;
            let mut groups = self.broker.list_groups();
            groups.retain(|g| self.access.may(&caller, Op::Describe, GROUP, &g.group));
            Ok(convert_group::group_list(groups))
        };
        unary(&self.metrics, &self.inflight, "ListGroups", list).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let allowed = self.allow(&request, Op::Describe, GROUP, &request.get_ref().group);
        let describe = async {
            allowed?;
            self.broker.describe_group(&request.get_ref().group).map(convert_group::description).map_err(to_status)
        };
        unary(&self.metrics, &self.inflight, "DescribeGroup", describe).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let allowed = self.allow(&request, Op::Create, GROUP, &request.get_ref().group);
        let create = async {
            allowed?;
            let request = request.into_inner();
            let change = convert_group::policy(request.config)?;
            let settings = self.broker.create_group(&request.group, &change).await.map_err(to_status)?;
            Ok(pb::CreateGroupResponse { config: Some(convert_group::config(&settings)) })
        };
        unary(&self.metrics, &self.inflight, "CreateGroup", create).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn alter_group_config(
        &self,
        request: Request<pb::AlterGroupConfigRequest>,
    ) -> Result<Response<pb::AlterGroupConfigResponse>, Status> {
        let allowed = self.allow(&request, Op::Alter, GROUP, &request.get_ref().group);
        let alter = async {
            allowed?;
            let request = request.into_inner();
            let change = convert_group::policy(request.config)?;
            let settings = self.broker.alter_group_config(&request.group, &change).await.map_err(to_status)?;
            Ok(pb::AlterGroupConfigResponse { config: Some(convert_group::config(&settings)) })
        };
        unary(&self.metrics, &self.inflight, "AlterGroupConfig", alter).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group, topic = %request.get_ref().topic))]
    async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<Response<pb::ResetGroupOffsetsResponse>, Status> {
        let allowed = self.allow(&request, Op::GroupAdmin, GROUP, &request.get_ref().group);
        let reset = async {
            allowed?;
            let spec = convert_group::reset(request.into_inner())?;
            let positions = self.broker.reset_group_offsets(spec).await.map_err(to_status)?;
            Ok(convert_group::reset_response(&positions))
        };
        unary(&self.metrics, &self.inflight, "ResetGroupOffsets", reset).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let allowed = self.allow(&request, Op::GroupAdmin, GROUP, &request.get_ref().group);
        let r = request.get_ref();
        let delete = async {
            allowed?;
            self.broker.delete_group(&r.group, r.force).await.map_err(to_status)
        };
        unary(&self.metrics, &self.inflight, "DeleteGroup", async { delete.await.map(|()| pb::DeleteGroupResponse {}) })
            .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, group = %request.get_ref().group))]
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let allowed = self.allow(&request, Op::Consume, TOPIC, &request.get_ref().topic);
        let list = async {
            allowed?;
            let spec = convert_dead_letter::list(request.into_inner())?;
            convert_dead_letter::page(self.broker.list_dead_letters(spec).await.map_err(to_status)?)
        };
        unary(&self.metrics, &self.inflight, "ListDeadLetters", list).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, group = %request.get_ref().group))]
    async fn redrive_dead_letters(
        &self,
        request: Request<pb::RedriveDeadLettersRequest>,
    ) -> Result<Response<pb::RedriveDeadLettersResponse>, Status> {
        let allowed = self.allow(&request, Op::DeadLetterAdmin, GROUP, &request.get_ref().group);
        let r = request.get_ref();
        let redrive = async {
            allowed?;
            let selection = convert_dead_letter::selection(r)?;
            let redriven = self.broker.redrive_dead_letters(&r.topic, &r.group, &selection).await.map_err(to_status)?;
            Ok(pb::RedriveDeadLettersResponse { redriven })
        };
        unary(&self.metrics, &self.inflight, "RedriveDeadLetters", redrive).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, group = %request.get_ref().group))]
    async fn discard_dead_letters(
        &self,
        request: Request<pb::DiscardDeadLettersRequest>,
    ) -> Result<Response<pb::DiscardDeadLettersResponse>, Status> {
        let allowed = self.allow(&request, Op::DeadLetterAdmin, GROUP, &request.get_ref().group);
        let r = request.get_ref();
        let discard = async {
            allowed?;
            let selection = convert_dead_letter::discard_selection(r)?;
            let discarded =
                self.broker.discard_dead_letters(&r.topic, &r.group, &selection).await.map_err(to_status)?;
            Ok(pb::DiscardDeadLettersResponse { discarded })
        };
        unary(&self.metrics, &self.inflight, "DiscardDeadLetters", discard).await
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        unary(&self.metrics, &self.inflight, "CreateToken", self.create_token_rpc(request)).await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        unary(&self.metrics, &self.inflight, "ListTokens", async { self.list_tokens_rpc(request) }).await
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        unary(&self.metrics, &self.inflight, "RevokeToken", self.revoke_token_rpc(request)).await
    }

    async fn add_acl(&self, request: Request<pb::AddAclRequest>) -> Result<Response<pb::AddAclResponse>, Status> {
        unary(&self.metrics, &self.inflight, "AddAcl", self.add_acl_rpc(request)).await
    }

    async fn list_acls(&self, request: Request<pb::ListAclsRequest>) -> Result<Response<pb::ListAclsResponse>, Status> {
        unary(&self.metrics, &self.inflight, "ListAcls", async { self.list_acls_rpc(request) }).await
    }

    async fn remove_acl(
        &self,
        request: Request<pb::RemoveAclRequest>,
    ) -> Result<Response<pb::RemoveAclResponse>, Status> {
        unary(&self.metrics, &self.inflight, "RemoveAcl", self.remove_acl_rpc(request)).await
    }

    async fn broker_info(
        &self,
        request: Request<pb::BrokerInfoRequest>,
    ) -> Result<Response<pb::BrokerInfoResponse>, Status> {
        let allowed = self.allow(&request, Op::Describe, CLUSTER, "");
        let info = async {
            allowed?;
            Ok(self.info())
        };
        unary(&self.metrics, &self.inflight, "BrokerInfo", info).await
    }
}
