"""The demo shop's one HTML page: plain forms, no scripts, no external assets."""

from __future__ import annotations

from html import escape

__all__ = ["render_home"]

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
h1{font-size:1.6rem;margin-bottom:.2rem}.muted{color:#5b6475;font-size:.9rem}
.card{border:1px solid #d6dae3;border-radius:.6rem;padding:1rem 1.2rem;margin:1rem 0}
.worker{display:inline-block;background:#e8f0ff;color:#1a4db3;border-radius:.4rem;padding:0 .5rem;font-weight:600}
input{font:inherit;padding:.3rem .5rem}button{font:inherit;padding:.3rem .8rem;cursor:pointer}
ul{padding-left:1.2rem}li form{display:inline;margin-left:.5rem}code{font-size:.85rem}
"""


def render_home(*, user: str | None, worker: str, id_hash: str | None, cart: dict[str, int]) -> str:
    who = (
        f"Logged in as <strong>{escape(user)}</strong>"
        '<form method="post" action="/do/logout" style="display:inline;margin-left:1rem">'
        "<button>Log out</button></form>"
        if user
        else '<form method="post" action="/do/login">Name <input name="user" required maxlength="64"> '
        "<button>Log in</button></form>"
    )
    items = "".join(
        f"<li>{escape(name)} × {count}"
        f'<form method="post" action="/do/remove"><input type="hidden" name="item" value="{escape(name)}">'
        "<button>Remove</button></form></li>"
        for name, count in sorted(cart.items())
    )
    session = f"<code>{escape(id_hash[:16])}…</code>" if id_hash else "none yet"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>webtier demo shop</title><style>{_STYLE}</style></head>
<body>
<h1>webtier demo shop</h1>
<p class="muted">Served by worker <span class="worker" id="worker">{escape(worker)}</span>.
Reload: any worker can answer, and your session stays.</p>
<div class="card" id="who">{who}</div>
<div class="card"><h2>Cart</h2>
<ul id="cart">{items or "<li class='muted'>empty</li>"}</ul>
<form method="post" action="/do/add">Item <input name="item" required maxlength="64"> <button>Add</button></form>
</div>
<p class="muted">Session (SHA-256 of its id, as the store keys it): {session}</p>
</body></html>
"""
