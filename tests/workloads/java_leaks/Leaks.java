// Java leaks for memtrace's tests: a loop of "requests", each making
// garbage (~8 KiB in 64 small arrays, a string) and, by mode, keeping
// something:
//
//   java Leaks MODE RATE [SECONDS [THEN]]
//
//   list       a static ArrayList grows by a 1 KiB byte array a request
//   map        a HashMap cache keyed by request id grows by a session
//              (an object holding a 2 KiB array) a request
//   listeners  a static registry keeps a listener (holding a 768-byte
//              context) per request
//   lru        a LinkedHashMap LRU cache of 10,000 1 KiB entries: fills in
//              the first 10,000 requests, then holds its size
//   stable     garbage only
//
// RATE requests a second (by the clock: late ones catch up), or "max" for
// as many as it can (then it prints "at S s: N" each second: N requests
// done by S seconds). Prints "ready" when its loop starts; after SECONDS
// (if given) prints "requests N in S s" and exits, or with THEN (another
// mode) goes on in that mode.
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public class Leaks {
    static final List<byte[]> retained = new ArrayList<>();
    static final Map<Long, Session> sessions = new HashMap<>();
    static final List<Listener> listeners = new ArrayList<>();
    static final Map<Long, byte[]> lru = new LinkedHashMap<Long, byte[]>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Long, byte[]> eldest) {
            return size() > 10000;
        }
    };
    static long sink;

    static final class Session {
        final long id;
        final byte[] state;

        Session(long id, byte[] state) {
            this.id = id;
            this.state = state;
        }
    }

    static final class Listener {
        final byte[] context;

        Listener(byte[] context) {
            this.context = context;
        }
    }

    static void remember(long id) {
        retained.add(new byte[1024]); // list leak
    }

    static void cache(long id) {
        sessions.put(id, new Session(id, new byte[2048])); // map leak
    }

    static void subscribe(long id) {
        listeners.add(new Listener(new byte[768])); // listener leak
    }

    static void recent(long id) {
        lru.put(id, new byte[1024]); // lru cache
    }

    static void garbage(long id) {
        // ~8 KiB in 64 small arrays of 16 to 212 bytes, as a request's
        // parsing and formatting make them.
        for (int i = 0; i < 64; i++) {
            byte[] part = new byte[16 + (int) ((id + i * 37) % 197)];
            part[0] = (byte) i;
            sink += part[part.length - 1];
        }
        String s = "request " + id;
        sink += s.length();
    }

    static void handle(String mode, long id) {
        garbage(id);
        switch (mode) {
            case "list": remember(id); break;
            case "map": cache(id); break;
            case "listeners": subscribe(id); break;
            case "lru": recent(id); break;
            case "stable": break;
            default: throw new IllegalArgumentException("unknown mode " + mode);
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        boolean max = args[1].equals("max");
        double rate = max ? 0 : Double.parseDouble(args[1]);
        double seconds = args.length > 2 ? Double.parseDouble(args[2]) : Double.POSITIVE_INFINITY;
        String then = args.length > 3 ? args[3] : null;
        System.out.println("ready");
        System.out.flush();
        long start = System.nanoTime();
        long id = 0;
        double reported = 0;
        while (true) {
            double elapsed = (System.nanoTime() - start) / 1e9;
            if (elapsed >= seconds) {
                if (then == null) {
                    break;
                }
                System.out.println("requests " + id + " in " + String.format("%.3f", elapsed) + " s");
                System.out.flush();
                mode = then;
                then = null;
                seconds = Double.POSITIVE_INFINITY;
            }
            if (max) {
                for (int i = 0; i < 1000; i++) {
                    handle(mode, id++);
                }
                if (elapsed >= reported + 1) {
                    reported = Math.floor(elapsed);
                    System.out.println("at " + String.format("%.3f", elapsed) + " s: " + id);
                    System.out.flush();
                }
                continue;
            }
            long due = (long) (elapsed * rate);
            while (id < due) {
                handle(mode, id++);
            }
            Thread.sleep(1);
        }
        double took = (System.nanoTime() - start) / 1e9;
        System.out.println("requests " + id + " in " + String.format("%.3f", took) + " s");
    }
}
