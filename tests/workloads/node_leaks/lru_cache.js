'use strict';
// A bounded cache: the 1000 most recent requests' rendered pages (~64 KiB
// each), the oldest evicted. It fills in its first seconds, then stays
// level. (Pages twice V8's sampling interval are nearly all sampled: the
// level's estimate barely wanders as entries turn over.)
const serve = require('./serve');

const MAX_ENTRIES = 1000;
const recent = new Map();

function handleRequest(req, res) { // plateau: handleRequest
  const id = Number(req.url.slice(req.url.indexOf('=') + 1));
  const page = { id, user: 'user-' + id };
  page.rows = new Array(8192).fill(id);
  recent.set(id, page);
  if (recent.size > MAX_ENTRIES) recent.delete(recent.keys().next().value);
  res.end('cached ' + recent.size);
}

serve(handleRequest);
