# The partition rule of completion.WithPartitions / Config.Partitions, for a
# Python producer. partition(stream, task_id, n) returns (index, key).
def partition(stream, task_id, n):
    h = 0x811C9DC5                                  # FNV-1a, 32 bits, of the UTF-8 bytes
    for b in task_id.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    i = h % n if n > 1 else 0
    if n <= 1:
        return i, stream
    def slot(tag):                                  # CRC16-XMODEM mod 16384: the Redis Cluster slot
        crc = 0
        for b in tag.encode():
            crc ^= b << 8
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        return crc % 16384
    k = 0
    while not i * 16384 // n <= slot(f"{i}.{k}") < (i + 1) * 16384 // n:
        k += 1
    return i, f"{stream}:{{{i}.{k}}}"
