//! `sluice.v1.Admin`.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_core::Broker;
use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::unary;
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
}

impl AdminService {
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
        unary(&self.metrics, &self.inflight, "CreateTopic", self.create(request.into_inner())).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let delete = async { self.broker.delete_topic(&request.get_ref().name).await.map_err(to_status) };
        unary(&self.metrics, &self.inflight, "DeleteTopic", async { delete.await.map(|()| pb::DeleteTopicResponse {}) })
            .await
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let list = async {
            Ok(pb::ListTopicsResponse { topics: self.broker.topics().iter().map(|t| convert::topic_info(t)).collect() })
        };
        unary(&self.metrics, &self.inflight, "ListTopics", list).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        unary(&self.metrics, &self.inflight, "DescribeTopic", async { self.describe(&request.get_ref().name) }).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        unary(&self.metrics, &self.inflight, "AlterTopicConfig", self.alter(request.into_inner())).await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        let request = request.into_inner();
        let add = async {
            let topic = self.broker.add_partitions(&request.name, request.partitions).await.map_err(to_status)?;
            Ok(pb::AddPartitionsResponse { topic: Some(convert::topic_info(&topic)) })
        };
        unary(&self.metrics, &self.inflight, "AddPartitions", add).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let list = async { Ok(convert_group::group_list(self.broker.list_groups())) };
        unary(&self.metrics, &self.inflight, "ListGroups", list).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let describe = async {
            self.broker.describe_group(&request.get_ref().group).map(convert_group::description).map_err(to_status)
        };
        unary(&self.metrics, &self.inflight, "DescribeGroup", describe).await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let create = async {
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
        let alter = async {
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
        let reset = async {
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
        let r = request.get_ref();
        let delete = async { self.broker.delete_group(&r.group, r.force).await.map_err(to_status) };
        unary(&self.metrics, &self.inflight, "DeleteGroup", async { delete.await.map(|()| pb::DeleteGroupResponse {}) })
            .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, group = %request.get_ref().group))]
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let list = async {
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
        let r = request.get_ref();
        let redrive = async {
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
        let r = request.get_ref();
        let discard = async {
            let selection = convert_dead_letter::discard_selection(r)?;
            let discarded =
                self.broker.discard_dead_letters(&r.topic, &r.group, &selection).await.map_err(to_status)?;
            Ok(pb::DiscardDeadLettersResponse { discarded })
        };
        unary(&self.metrics, &self.inflight, "DiscardDeadLetters", discard).await
    }

    async fn broker_info(
        &self,
        _request: Request<pb::BrokerInfoRequest>,
    ) -> Result<Response<pb::BrokerInfoResponse>, Status> {
        unary(&self.metrics, &self.inflight, "BrokerInfo", async { Ok(self.info()) }).await
    }
}
