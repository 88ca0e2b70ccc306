'use strict';
// Listeners added per request and never removed: each request subscribes
// to configuration reloads with a closure over its context (~4 KiB), so
// the emitter keeps every request's context alive.
const { EventEmitter } = require('events');
const serve = require('./serve');

const config = new EventEmitter();

function reconfigure(context) {
  context.trace.fill(1);
}

function handleRequest(req, res) { // leak: handleRequest
  const context = { url: req.url, agent: req.headers['user-agent'] };
  context.trace = new Array(512).fill(0);
  config.on('reload', () => reconfigure(context));
  res.end('ok');
}

serve(handleRequest);
