"""vm-ia's chat app stand-in: Flask behind a path prefix (as flask-prefix) whose messages are
validated by pydantic 2 (its core, pydantic_core, is compiled Rust) and serialized by
orjson (compiled too), both from PyPI at versions Debian does not ship.

/health proves the compiled dependencies import on the image's CPU and returns their
versions.
"""
import os
import platform
import socket

import orjson
import pydantic
import pydantic_core
from flask import Flask, Response, redirect, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)
NAME = os.environ.get("APP_NAME", "chat")


class Message(pydantic.BaseModel):
    role: str
    content: str = pydantic.Field(min_length=1)


def as_json(value, status=200):
    return Response(orjson.dumps(value), status=status, mimetype="application/json")


@app.route("/")
def index():
    return render_template("index.html", name=NAME, host=socket.gethostname())


@app.route("/items/")
def items():
    return as_json(
        {
            "app": NAME,
            "url": url_for("items"),
            "home": url_for("index"),
            "prefix": request.script_root,
            "client": request.remote_addr,
            "scheme": request.scheme,
        }
    )


@app.route("/back")
def back():
    return redirect(url_for("index"))


@app.route("/messages", methods=["POST"])
def messages():
    try:
        m = Message.model_validate_json(request.get_data())
    except pydantic.ValidationError as e:
        return as_json({"errors": e.errors(include_url=False)}, status=422)
    return as_json(m.model_dump())


@app.route("/health")
def health():
    # Validating and serializing run the compiled code, not only its import.
    m = Message.model_validate({"role": "user", "content": "ping"})
    return as_json(
        {
            "ok": orjson.loads(orjson.dumps(m.model_dump())) == m.model_dump(),
            "machine": platform.machine(),
            "pydantic": pydantic.VERSION,
            "pydantic_core": pydantic_core.__version__,
            "orjson": orjson.__version__,
        }
    )
