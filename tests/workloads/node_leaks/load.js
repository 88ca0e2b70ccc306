'use strict';
// Load for the node_leaks servers, from another process over 127.0.0.1
// (keep-alive connections, at most 8 requests in flight).
//
//   node load.js PORT RATE [COUNT]   RATE requests a second (by the clock:
//                                    late ones catch up), GET /?id=N with
//                                    N = PID * 10^6 + 0, 1, 2, ...; after COUNT
//                                    answers, prints "done" and exits.
//   node load.js PORT max SECONDS    as many as answered for SECONDS,
//                                    then prints "requests N in S s".
//
// It prints "ready" before the first request.
const http = require('http');

const [port, rate, count] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const start = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
let sent = 0;
let answered = 0;
let inFlight = 0;

function request(onAnswer) {
  // Ids unique across load processes (a server keyed by them sees each
  // once).
  const id = process.pid * 1e6 + sent++;
  inFlight++;
  get(id, onAnswer, true);
}

// A keep-alive socket the server closed as the request went out is reset
// (ECONNRESET): that request is sent again, once, on a new socket.
function get(id, onAnswer, retry) {
  http
    .get({ host: '127.0.0.1', port: Number(port), path: '/?id=' + id, agent }, (res) => {
      res.resume();
      res.on('end', () => {
        inFlight--;
        answered++;
        onAnswer();
      });
    })
    .on('error', (e) => {
      if (retry && e.code === 'ECONNRESET') {
        get(id, onAnswer, false);
        return;
      }
      console.error('load: ' + e.message);
      process.exit(1);
    });
}

console.log('ready');
if (rate === 'max') {
  const seconds = Number(count);
  const more = () => {
    if (elapsed() < seconds) request(more);
    else if (inFlight === 0) {
      console.log(`requests ${answered} in ${elapsed().toFixed(2)} s`);
      process.exit(0);
    }
  };
  for (let i = 0; i < 8; i++) request(more);
} else {
  const limit = count === undefined ? Infinity : Number(count);
  const finished = () => {
    if (answered === limit) {
      console.log('done');
      process.exit(0);
    }
  };
  setInterval(() => {
    const due = Math.min(limit, Math.floor(elapsed() * Number(rate)) + 1);
    while (sent < due && inFlight < 8) request(finished);
  }, 10);
}
