'use strict';
// A timer per request whose closure keeps a large array: the audit runs
// an hour later, so every request's rows (~4 KiB) stay alive until then.
const serve = require('./serve');

let audited = 0;

function audit(rows) {
  audited += rows.length;
}

function handleRequest(req, res) { // leak: handleRequest
  const rows = new Array(512).fill(req.url);
  setTimeout(() => audit(rows), 3600 * 1000);
  res.end('ok');
}

serve(handleRequest);
