"""A Flask app that works under any path prefix a proxy gives it.

The gateway strips the route's prefix (/chat/) and sends it as X-Forwarded-Prefix; ProxyFix
puts it in SCRIPT_NAME, so url_for() builds /chat/... links, and redirects stay under it.
"""
import os
import socket

from flask import Flask, jsonify, redirect, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)
NAME = os.environ.get("APP_NAME", "flask-prefix")


@app.route("/")
def index():
    return render_template("index.html", name=NAME, host=socket.gethostname())


@app.route("/items/")
def items():
    return jsonify(
        app=NAME,
        url=url_for("items"),
        home=url_for("index"),
        prefix=request.script_root,
        client=request.remote_addr,
        scheme=request.scheme,
    )


@app.route("/back")
def back():
    return redirect(url_for("index"))


@app.route("/health")
def health():
    return "ok\n"
