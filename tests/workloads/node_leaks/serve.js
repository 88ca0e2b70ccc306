'use strict';
// What the node_leaks servers share: an HTTP server on 127.0.0.1 (a port
// the kernel picks) calling the workload's request handler, and, on
// SIGUSR2, a line "heap BYTES" with V8's own used_heap_size after a full
// collection (what the anchor test compares memtrace's figures with).
// It prints "ready", then "listening PORT".
const http = require('http');
const v8 = require('v8');
const vm = require('vm');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

module.exports = function serve(handler) {
  process.on('SIGUSR2', () => {
    gc();
    console.log('heap ' + v8.getHeapStatistics().used_heap_size);
  });
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1', () => {
    console.log('ready');
    console.log('listening ' + server.address().port);
  });
};
