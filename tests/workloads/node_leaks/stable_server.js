'use strict';
// A server that keeps nothing: each request renders a JSON answer (~2 KiB
// of garbage) and forgets it.
const serve = require('./serve');

let served = 0;

function handleRequest(req, res) {
  const rows = new Array(256).fill(req.url);
  served++;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ served, rows: rows.length, first: rows[0] }));
}

serve(handleRequest);
