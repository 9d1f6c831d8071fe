//! `user ...`, `role ...` and `auth enable|disable|status`, with etcdctl 3.4's arguments and
//! simple output (etcdctl's `printer_simple.go`), byte for byte.
use clap::{Args, Subcommand};

use super::{emit, CliError, Context};
use crate::client::prefix_range_end;
use crate::proto::authpb::{Permission, UserAddOptions};
use crate::proto::etcdserverpb::*;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a new user.
    Add(UserAddArgs),
    /// Deletes a user.
    Delete(NameArgs),
    /// Gets detailed information of a user.
    Get(UserGetArgs),
    /// Lists all users.
    List,
    /// Changes password of user.
    Passwd(PasswdArgs),
    /// Grants a role to a user.
    #[command(name = "grant-role")]
    GrantRole(UserRoleArgs),
    /// Revokes a role from a user.
    #[command(name = "revoke-role")]
    RevokeRole(UserRoleArgs),
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role.
    Add(NameArgs),
    /// Deletes a role.
    Delete(NameArgs),
    /// Gets detailed information of a role.
    Get(NameArgs),
    /// Lists all roles.
    List,
    /// Grants a key to a role.
    #[command(name = "grant-permission")]
    GrantPermission(GrantArgs),
    /// Revokes a key from a role.
    #[command(name = "revoke-permission")]
    RevokePermission(RevokeArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
    /// Returns authentication status.
    Status,
}

fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    pub args: Vec<String>,
    /// Read password from stdin instead of interactive terminal.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = boolish())]
    pub interactive: bool,
    /// Supply password from the command line flag.
    #[arg(long, default_value = "")]
    pub new_user_password: String,
    /// Create a user without password (CN based auth only).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub no_password: bool,
}

#[derive(Debug, Args)]
pub struct UserGetArgs {
    pub args: Vec<String>,
    /// Show permissions of roles granted to the user.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub detail: bool,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    pub args: Vec<String>,
    /// If true, read password from stdin instead of interactive terminal.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = boolish())]
    pub interactive: bool,
}

#[derive(Debug, Args)]
pub struct UserRoleArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    pub args: Vec<String>,
    /// Grant a prefix permission.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub prefix: bool,
    /// Grant a permission of keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub from_key: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub args: Vec<String>,
    /// Revoke a prefix permission.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub prefix: bool,
    /// Revoke a permission of keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = boolish())]
    pub from_key: bool,
}

fn one_arg<'a>(args: &'a [String], command: &str, what: &str) -> Result<&'a str, CliError> {
    match args {
        [one] => Ok(one),
        _ => Err(CliError::bad_args(format!(
            "{command} command requires {what} as its argument"
        ))),
    }
}

fn out(text: String) -> anyhow::Result<i32> {
    emit(text.as_bytes())?;
    Ok(super::exit::SUCCESS)
}

/// etcdctl's password prompt: interactive asks twice and compares; otherwise one line of stdin.
fn read_new_password(name: &str, interactive: bool) -> Result<String, CliError> {
    let io = |e: std::io::Error| CliError::bad_args(format!("failed to read password: {e}"));
    if !interactive {
        return super::read_secret("").map_err(io);
    }
    let first = super::read_secret(&format!("Password of {name}: ")).map_err(io)?;
    let again = super::read_secret(&format!("Type password of {name} again for confirmation: "))
        .map_err(io)?;
    if first != again {
        return Err(CliError::bad_args("given passwords are different"));
    }
    Ok(first)
}

pub async fn user(ctx: &Context, cmd: UserCommand) -> anyhow::Result<i32> {
    match cmd {
        UserCommand::Add(a) => {
            let arg = one_arg(&a.args, "user add", "user name")?;
            let (name, password) = if a.no_password {
                (arg.to_string(), String::new())
            } else if let Some((n, p)) = arg.split_once(':') {
                (n.to_string(), p.to_string())
            } else if !a.new_user_password.is_empty() {
                (arg.to_string(), a.new_user_password.clone())
            } else {
                (arg.to_string(), read_new_password(arg, a.interactive)?)
            };
            let client = ctx.connect().await?;
            let req = AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(UserAddOptions {
                    no_password: a.no_password,
                }),
                hashed_password: String::new(),
            };
            ctx.call(client.auth().user_add(ctx.request(req))).await?;
            out(format!("User {name} created\n"))
        }
        UserCommand::Delete(a) => {
            let name = one_arg(&a.args, "user delete", "user name")?.to_string();
            let client = ctx.connect().await?;
            let req = AuthUserDeleteRequest { name: name.clone() };
            ctx.call(client.auth().user_delete(ctx.request(req)))
                .await?;
            out(format!("User {name} deleted\n"))
        }
        UserCommand::Get(a) => {
            let name = one_arg(&a.args, "user get", "user name")?.to_string();
            let client = ctx.connect().await?;
            let req = AuthUserGetRequest { name: name.clone() };
            let resp = ctx.call(client.auth().user_get(ctx.request(req))).await?;
            let mut text = format!("User: {name}\n");
            if a.detail {
                for role in &resp.roles {
                    let req = AuthRoleGetRequest { role: role.clone() };
                    let r = ctx.call(client.auth().role_get(ctx.request(req))).await?;
                    text.push('\n');
                    text.push_str(&role_text(role, &r.perm));
                }
            } else {
                text.push_str("Roles:");
                for role in &resp.roles {
                    text.push(' ');
                    text.push_str(role);
                }
                text.push('\n');
            }
            out(text)
        }
        UserCommand::List => {
            let client = ctx.connect().await?;
            let resp = ctx
                .call(client.auth().user_list(ctx.request(AuthUserListRequest {})))
                .await?;
            out(resp.users.iter().map(|u| format!("{u}\n")).collect())
        }
        UserCommand::Passwd(a) => {
            let name = one_arg(&a.args, "user passwd", "user name")?.to_string();
            let password = read_new_password(&name, a.interactive)?;
            let client = ctx.connect().await?;
            let req = AuthUserChangePasswordRequest {
                name,
                password,
                hashed_password: String::new(),
            };
            ctx.call(client.auth().user_change_password(ctx.request(req)))
                .await?;
            out("Password updated\n".to_string())
        }
        UserCommand::GrantRole(a) => {
            let [user, role] = two_args(
                &a.args,
                "user grant command requires user name and role name as its argument",
            )?;
            let client = ctx.connect().await?;
            let req = AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            ctx.call(client.auth().user_grant_role(ctx.request(req)))
                .await?;
            out(format!("Role {role} is granted to user {user}\n"))
        }
        UserCommand::RevokeRole(a) => {
            let [user, role] = two_args(
                &a.args,
                "user revoke-role requires user name and role name as its argument",
            )?;
            let client = ctx.connect().await?;
            let req = AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            ctx.call(client.auth().user_revoke_role(ctx.request(req)))
                .await?;
            out(format!("Role {role} is revoked from user {user}\n"))
        }
    }
}

fn two_args(args: &[String], message: &str) -> Result<[String; 2], CliError> {
    match args {
        [a, b] => Ok([a.clone(), b.clone()]),
        _ => Err(CliError::bad_args(message)),
    }
}

/// etcdctl's `RoleGet` printer: read then write permissions, single keys bare, ranges as
/// `[key, end)` (with `(prefix key)` when the range is a prefix), `[key, <open ended>` for
/// from-key permissions.
pub fn role_text(role: &str, perms: &[Permission]) -> String {
    let range = |p: &Permission| -> String {
        let key = String::from_utf8_lossy(&p.key);
        match p.range_end.as_slice() {
            [] => format!("\t{key}\n"),
            [0] => format!("\t[{key}, <open ended>\n"),
            end => {
                let mut line = format!("\t[{key}, {})", String::from_utf8_lossy(end));
                if prefix_range_end(&p.key) == end {
                    line.push_str(&format!(" (prefix {key})"));
                }
                line.push('\n');
                line
            }
        }
    };
    let mut text = format!("Role {role}\nKV Read:\n");
    for p in perms
        .iter()
        .filter(|p| p.perm_type == 0 || p.perm_type == 2)
    {
        text.push_str(&range(p));
    }
    text.push_str("KV Write:\n");
    for p in perms
        .iter()
        .filter(|p| p.perm_type == 1 || p.perm_type == 2)
    {
        text.push_str(&range(p));
    }
    text
}

/// The key range a permission command names: `key [end]`, `--prefix` or `--from-key`.
fn perm_range(
    key: &str,
    end: Option<&String>,
    prefix: bool,
    from_key: bool,
) -> Result<Vec<u8>, CliError> {
    if prefix && from_key {
        return Err(CliError::bad_args(
            "--from-key and --prefix flags are mutually exclusive",
        ));
    }
    match end {
        Some(_) if prefix => Err(CliError::bad_args(
            "unexpected endkey argument with --prefix flag",
        )),
        Some(_) if from_key => Err(CliError::bad_args(
            "unexpected endkey argument with --from-key flag",
        )),
        Some(e) => Ok(e.as_bytes().to_vec()),
        None if prefix => Ok(prefix_range_end(key.as_bytes())),
        None if from_key => Ok(vec![0]),
        None => Ok(Vec::new()),
    }
}

pub async fn role(ctx: &Context, cmd: RoleCommand) -> anyhow::Result<i32> {
    match cmd {
        RoleCommand::Add(a) => {
            let name = one_arg(&a.args, "role add", "role name")?.to_string();
            let client = ctx.connect().await?;
            let req = AuthRoleAddRequest { name: name.clone() };
            ctx.call(client.auth().role_add(ctx.request(req))).await?;
            out(format!("Role {name} created\n"))
        }
        RoleCommand::Delete(a) => {
            let name = one_arg(&a.args, "role delete", "role name")?.to_string();
            let client = ctx.connect().await?;
            let req = AuthRoleDeleteRequest { role: name.clone() };
            ctx.call(client.auth().role_delete(ctx.request(req)))
                .await?;
            out(format!("Role {name} deleted\n"))
        }
        RoleCommand::Get(a) => {
            let name = one_arg(&a.args, "role get", "role name")?.to_string();
            let client = ctx.connect().await?;
            let req = AuthRoleGetRequest { role: name.clone() };
            let resp = ctx.call(client.auth().role_get(ctx.request(req))).await?;
            out(role_text(&name, &resp.perm))
        }
        RoleCommand::List => {
            let client = ctx.connect().await?;
            let resp = ctx
                .call(client.auth().role_list(ctx.request(AuthRoleListRequest {})))
                .await?;
            out(resp.roles.iter().map(|r| format!("{r}\n")).collect())
        }
        RoleCommand::GrantPermission(a) => {
            if a.args.len() < 3 || a.args.len() > 4 {
                return Err(CliError::bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                )
                .into());
            }
            let name = &a.args[0];
            let perm_type = match a.args[1].to_uppercase().as_str() {
                "READ" => 0,
                "WRITE" => 1,
                "READWRITE" => 2,
                _ => {
                    let given = &a.args[1];
                    return Err(
                        CliError::bad_args(format!("invalid permission type: {given}")).into(),
                    );
                }
            };
            let key = &a.args[2];
            let range_end = perm_range(key, a.args.get(3), a.prefix, a.from_key)?;
            let client = ctx.connect().await?;
            let req = AuthRoleGrantPermissionRequest {
                name: name.clone(),
                perm: Some(Permission {
                    perm_type,
                    key: key.as_bytes().to_vec(),
                    range_end,
                }),
            };
            ctx.call(client.auth().role_grant_permission(ctx.request(req)))
                .await?;
            out(format!("Role {name} updated\n"))
        }
        RoleCommand::RevokePermission(a) => {
            if a.args.len() < 2 || a.args.len() > 3 {
                return Err(CliError::bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                )
                .into());
            }
            let name = &a.args[0];
            let key = &a.args[1];
            let range_end = perm_range(key, a.args.get(2), a.prefix, a.from_key)?;
            let client = ctx.connect().await?;
            let req = AuthRoleRevokePermissionRequest {
                role: name.clone(),
                key: key.as_bytes().to_vec(),
                range_end: range_end.clone(),
            };
            ctx.call(client.auth().role_revoke_permission(ctx.request(req)))
                .await?;
            let what = match range_end.as_slice() {
                [] => format!("key {key}"),
                [0] => format!("range [{key}, <open ended>"),
                end => format!("range [{key}, {})", String::from_utf8_lossy(end)),
            };
            out(format!(
                "Permission of {what} is revoked from role {name}\n"
            ))
        }
    }
}

const ROOT_ROLE_MISSING: &str = "etcdserver: root user does not have root role";

pub async fn auth(ctx: &Context, cmd: AuthCommand) -> anyhow::Result<i32> {
    let client = ctx.connect().await?;
    match cmd {
        AuthCommand::Enable => {
            // etcdctl creates the root role and grants it to root when that is all that is
            // missing, then enables again.
            loop {
                match ctx
                    .call_status(client.auth().auth_enable(ctx.request(AuthEnableRequest {})))
                    .await
                {
                    Ok(_) => break,
                    Err(s) if s.message() == ROOT_ROLE_MISSING => {
                        let add = AuthRoleAddRequest {
                            name: "root".into(),
                        };
                        ctx.call(client.auth().role_add(ctx.request(add))).await?;
                        let grant = AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        ctx.call(client.auth().user_grant_role(ctx.request(grant)))
                            .await?;
                    }
                    Err(s) => return Err(CliError::from_status(&s).into()),
                }
            }
            out("Authentication Enabled\n".to_string())
        }
        AuthCommand::Disable => {
            ctx.call(
                client
                    .auth()
                    .auth_disable(ctx.request(AuthDisableRequest {})),
            )
            .await?;
            out("Authentication Disabled\n".to_string())
        }
        AuthCommand::Status => {
            let resp = ctx
                .call(client.auth().auth_status(ctx.request(AuthStatusRequest {})))
                .await?;
            out(format!(
                "Authentication Status: {}\nAuthRevision: {}\n",
                resp.enabled, resp.auth_revision
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_get_prints_as_etcdctl() {
        let p = |t, k: &str, e: &[u8]| Permission {
            perm_type: t,
            key: k.as_bytes().to_vec(),
            range_end: e.to_vec(),
        };
        let perms = [
            p(2, "/app/", b"/app0"),
            p(1, "a", b"c"),
            p(0, "foo", b""),
            p(0, "z", b"\0"),
        ];
        assert_eq!(
            role_text("r1", &perms),
            "Role r1\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n\tfoo\n\t[z, <open ended>\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n\t[a, c)\n"
        );
    }
}
