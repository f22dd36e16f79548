"""`pairshift tokens create|list|revoke`: the bearer tokens of `pairshift api` (stored hashed, shown once)."""

from __future__ import annotations

import typer

from pairshift.cli.common import CLIError, console, emit_json, os_user, table

app = typer.Typer(help="API bearer tokens: create (shown once), list, revoke.", no_args_is_help=True)


def _registry():
    from pairshift.registry import open_registry

    return open_registry()


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the token (who or what uses it)."),
    scopes: str = typer.Option(
        ..., "--scopes", help="Comma-separated: resolve, observe, complete, read, admin."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {name, token, scopes} as JSON."),
) -> None:
    """Create a token and print it once: only its hash is stored, so it cannot be shown again."""
    from pairshift.tokens import TokenError, create_token

    try:
        with _registry().session() as s:
            new = create_token(s, name, scopes, by=os_user())
    except TokenError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        emit_json(new.model_dump())
        return
    console.print(f"token {new.name} ({', '.join(new.scopes)}); shown once, store it now:")
    console.print(new.token, soft_wrap=True)
    console.print("clients send it as 'Authorization: Bearer <token>' (Python clients: PAIRSHIFT_API_TOKEN)")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every token's name, scopes, creator and state (never the token)."""
    from pairshift.tokens import list_tokens

    with _registry().session() as s:
        tokens = list_tokens(s)
    if as_json:
        emit_json([t.model_dump(mode="json") for t in tokens])
        return
    table(
        "API tokens",
        ["name", "scopes", "created by", "created at", "revoked at"],
        [[t.name, ",".join(t.scopes), t.created_by, t.created_at, t.revoked_at] for t in tokens],
    )


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke a token: refused by every API replica within seconds (their caches hold a lookup 5 s)."""
    from pairshift.tokens import TokenError, revoke_token

    try:
        with _registry().session() as s:
            changed = revoke_token(s, name)
    except TokenError as exc:
        raise CLIError(str(exc)) from None
    console.print(f"token {name} revoked" if changed else f"token {name} was revoked already")
