// A transactional producer that holds a transaction open until told, for
// tests/e2e/hanging_txn_test.py (phase "late markers"). Run as a single
// source file with the rig's jars: java -cp 'LIBS/*' tests/kafka/TxnHold.java
//   BOOTSTRAP TOPIC PARTITION TRANSACTIONAL_ID KEY1 SOURCE1 KEY2 SOURCE2
// Writes KEY1's record in a transaction it commits, then KEY2's in one it
// leaves open; prints "open" once that record is written, then commits on
// a line "commit" from stdin (aborts on anything else, or at its end), and
// prints "committed". Each record is as kdedup forwards it: the key in
// Idempotency-Key, kdedup-source SOURCE ("<topic>/<partition>/<offset>"),
// kdedup-forwarded-at now.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnHold {
    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static ProducerRecord<byte[], byte[]> record(String topic, int partition,
                                                         String key, String source) {
        ProducerRecord<byte[], byte[]> r =
            new ProducerRecord<>(topic, partition, null, bytes("held " + key));
        r.headers().add("Idempotency-Key", bytes(key));
        r.headers().add("kdedup-source", bytes(source));
        r.headers().add("kdedup-forwarded-at",
                        bytes(Long.toString(System.currentTimeMillis())));
        return r;
    }

    public static void main(String[] args) throws Exception {
        String topic = args[1];
        int partition = Integer.parseInt(args[2]);
        Properties p = new Properties();

        p.put("bootstrap.servers", args[0]);
        p.put("transactional.id", args[3]);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            if (!"-".equals(args[4])) { // "-": no first (committed) transaction
                producer.beginTransaction();
                producer.send(record(topic, partition, args[4], args[5]));
                producer.commitTransaction();
            }
            producer.beginTransaction();
            producer.send(record(topic, partition, args[6], args[7])).get();
            System.out.println("open");
            System.out.flush();
            String line =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))
                    .readLine();
            if ("commit".equals(line)) {
                producer.commitTransaction();
                System.out.println("committed");
            } else {
                producer.abortTransaction();
                System.out.println("aborted");
            }
            System.out.flush();
        }
    }
}
