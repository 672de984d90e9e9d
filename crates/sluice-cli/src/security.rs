//! `sluice token …` and `sluice acl …`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use sluice_client::{Client, pb};

use crate::error::CliError;
use crate::output::Printer;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a principal and print it (shown only this once).
    Create {
        /// Who the token authenticates.
        principal: String,
        /// The principal may do everything (only a superuser may create one).
        #[arg(long)]
        superuser: bool,
    },
    /// List tokens by id and principal (never their secrets).
    List,
    /// Revoke a token: refused from the next request on; its open streams end.
    Revoke {
        /// The token's id (from `sluice token list`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resource {
    Topic,
    Group,
    Cluster,
}

#[derive(Debug, Args)]
pub struct AclArgs {
    /// A principal, or `*` for every authenticated principal.
    #[arg(long)]
    principal: String,
    /// produce, consume, describe, create, alter, delete, group-admin, dead-letter-admin,
    /// acl-admin or all.
    #[arg(long)]
    operation: String,
    /// What kind of resource.
    #[arg(long, value_enum)]
    resource: Resource,
    /// The resource's name; a trailing `*` makes it a prefix (`orders.*`), `*` alone is every
    /// name (the only choice for the cluster).
    #[arg(long, default_value = "*")]
    name: String,
    /// A deny entry (wins over every allow).
    #[arg(long)]
    deny: bool,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, refuse) an operation on resources.
    Add(AclArgs),
    /// List ACL entries.
    List,
    /// Remove an ACL entry by id (from `sluice acl list`).
    Remove { id: u64 },
}

fn operation(name: &str) -> Result<pb::AclOperation, CliError> {
    use pb::AclOperation as O;
    Ok(match name {
        "produce" => O::Produce,
        "consume" => O::Consume,
        "describe" => O::Describe,
        "create" => O::Create,
        "alter" => O::Alter,
        "delete" => O::Delete,
        "group-admin" => O::GroupAdmin,
        "dead-letter-admin" => O::DeadLetterAdmin,
        "acl-admin" => O::AclAdmin,
        "all" => O::All,
        other => return Err(CliError::Usage(format!("'{other}' is not an operation (see sluice acl add --help)"))),
    })
}

fn operation_name(value: i32) -> &'static str {
    use pb::AclOperation as O;
    match O::try_from(value).unwrap_or(O::Unspecified) {
        O::Produce => "produce",
        O::Consume => "consume",
        O::Describe => "describe",
        O::Create => "create",
        O::Alter => "alter",
        O::Delete => "delete",
        O::GroupAdmin => "group-admin",
        O::DeadLetterAdmin => "dead-letter-admin",
        O::AclAdmin => "acl-admin",
        O::All => "all",
        O::Unspecified => "?",
    }
}

fn acl_of(args: &AclArgs) -> Result<pb::Acl, CliError> {
    let (pattern, name) = match args.name.as_str() {
        "*" => (pb::AclPatternType::Any, String::new()),
        name => match name.strip_suffix('*') {
            Some(prefix) => (pb::AclPatternType::Prefix, prefix.to_owned()),
            None => (pb::AclPatternType::Literal, name.to_owned()),
        },
    };
    Ok(pb::Acl {
        id: 0,
        effect: if args.deny { pb::AclEffect::Deny } else { pb::AclEffect::Allow } as i32,
        principal: args.principal.clone(),
        resource: match args.resource {
            Resource::Topic => pb::AclResource::Topic,
            Resource::Group => pb::AclResource::Group,
            Resource::Cluster => pb::AclResource::Cluster,
        } as i32,
        pattern: pattern as i32,
        name,
        operation: operation(&args.operation)? as i32,
    })
}

fn describe(acl: &pb::Acl) -> (String, String, String) {
    let resource = match pb::AclResource::try_from(acl.resource).unwrap_or(pb::AclResource::Unspecified) {
        pb::AclResource::Topic => "topic",
        pb::AclResource::Group => "group",
        pb::AclResource::Cluster => "cluster",
        pb::AclResource::Unspecified => "?",
    };
    let name = match pb::AclPatternType::try_from(acl.pattern).unwrap_or(pb::AclPatternType::Unspecified) {
        pb::AclPatternType::Prefix => format!("{}*", acl.name),
        pb::AclPatternType::Literal => acl.name.clone(),
        _ => "*".into(),
    };
    let effect = if acl.effect == pb::AclEffect::Deny as i32 { "deny" } else { "allow" };
    (effect.into(), resource.into(), name)
}

pub async fn run_token(client: &Client, printer: &Printer, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { principal, superuser } => {
            let created =
                client.admin().create_token(pb::CreateTokenRequest { principal, superuser }).await?.into_inner();
            let info = created.info.unwrap_or_default();
            if printer.json_mode() {
                return printer.json(&json!({ "id": info.id, "principal": info.principal, "superuser": info.superuser, "token": created.token }));
            }
            eprintln!("token {} for '{}': shown only now, keep it in a secret store", info.id, info.principal);
            printer.line(&created.token)
        }
        TokenCommand::List => {
            let tokens = client.admin().list_tokens(pb::ListTokensRequest {}).await?.into_inner().tokens;
            if printer.json_mode() {
                let list: Vec<_> = tokens
                    .iter()
                    .map(|t| json!({ "id": t.id, "principal": t.principal, "superuser": t.superuser, "created_ms": t.created_ms }))
                    .collect();
                return printer.json(&serde_json::Value::Array(list));
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| vec![t.id.clone(), t.principal.clone(), if t.superuser { "yes" } else { "no" }.into()])
                .collect();
            printer.table(&["ID", "PRINCIPAL", "SUPERUSER"], &rows)
        }
        TokenCommand::Revoke { id } => {
            client.admin().revoke_token(pb::RevokeTokenRequest { id: id.clone() }).await?;
            if printer.json_mode() {
                return printer.json(&json!({ "revoked": id }));
            }
            printer.line(&format!("revoked token {id}"))
        }
    }
}

pub async fn run_acl(client: &Client, printer: &Printer, command: AclCommand) -> Result<(), CliError> {
    match command {
        AclCommand::Add(args) => {
            let acl = acl_of(&args)?;
            let added = client.admin().add_acl(pb::AddAclRequest { acl: Some(acl) }).await?.into_inner();
            let acl = added.acl.unwrap_or_default();
            let (effect, resource, name) = describe(&acl);
            if printer.json_mode() {
                return printer.json(&json!({ "id": acl.id, "effect": effect, "principal": acl.principal, "resource": resource, "name": name, "operation": operation_name(acl.operation) }));
            }
            printer.line(&format!(
                "added ACL {}: {effect} {} {} on {resource} {name}",
                acl.id,
                acl.principal,
                operation_name(acl.operation)
            ))
        }
        AclCommand::List => {
            let acls = client.admin().list_acls(pb::ListAclsRequest {}).await?.into_inner().acls;
            let rows: Vec<Vec<String>> = acls
                .iter()
                .map(|acl| {
                    let (effect, resource, name) = describe(acl);
                    vec![
                        acl.id.to_string(),
                        effect,
                        acl.principal.clone(),
                        operation_name(acl.operation).into(),
                        resource,
                        name,
                    ]
                })
                .collect();
            if printer.json_mode() {
                let list: Vec<_> = rows
                    .iter()
                    .map(|r| json!({ "id": r[0], "effect": r[1], "principal": r[2], "operation": r[3], "resource": r[4], "name": r[5] }))
                    .collect();
                return printer.json(&serde_json::Value::Array(list));
            }
            printer.table(&["ID", "EFFECT", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME"], &rows)
        }
        AclCommand::Remove { id } => {
            client.admin().remove_acl(pb::RemoveAclRequest { id }).await?;
            if printer.json_mode() {
                return printer.json(&json!({ "removed": id }));
            }
            printer.line(&format!("removed ACL {id}"))
        }
    }
}
