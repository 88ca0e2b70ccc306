'use strict';
// An unbounded Map cache: every request's session (~4 KiB: its id, user,
// user agent and a history of 512 entries) is kept under its id and never
// evicted.
const serve = require('./serve');

const sessions = new Map();

function handleRequest(req, res) { // leak: handleRequest
  const id = Number(req.url.slice(req.url.indexOf('=') + 1));
  const session = { id, user: 'user-' + id, agent: req.headers['user-agent'] };
  session.history = new Array(512).fill(id);
  sessions.set(id, session);
  res.end('sessions ' + sessions.size);
}

serve(handleRequest);
