//! The Avro binary encoding of the flat types the codecs support (zig-zag varints, little-endian
//! floats, length-prefixed bytes), read and written directly.

/// Reads values out of one datum; errors say what was being read and where.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!(
                "the datum is truncated: reading {what} at byte {} needs {n} bytes, {} are left",
                self.pos,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// A zig-zag varint long.
    #[inline]
    pub(crate) fn read_long(&mut self) -> Result<i64, String> {
        let start = self.pos;
        let mut raw: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(format!(
                    "the datum is truncated: a varint starting at byte {start} runs past its \
                     end ({} bytes)",
                    self.bytes.len()
                ));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(format!(
                    "the varint at byte {start} does not fit 64 bits (not Avro data of this schema?)"
                ));
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A zig-zag varint int (a long that must fit 32 bits).
    #[inline]
    pub(crate) fn read_int(&mut self) -> Result<i32, String> {
        let start = self.pos;
        let value = self.read_long()?;
        i32::try_from(value)
            .map_err(|_| format!("the int at byte {start} is {value}, which does not fit 32 bits"))
    }

    pub(crate) fn read_bool(&mut self) -> Result<bool, String> {
        let start = self.pos;
        match self.take(1, "a boolean")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!(
                "the boolean at byte {start} is 0x{other:02x}, not 0 or 1"
            )),
        }
    }

    pub(crate) fn read_f32(&mut self) -> Result<f32, String> {
        let mut le = [0; 4];
        le.copy_from_slice(self.take(4, "a float")?);
        Ok(f32::from_le_bytes(le))
    }

    pub(crate) fn read_f64(&mut self) -> Result<f64, String> {
        let mut le = [0; 8];
        le.copy_from_slice(self.take(8, "a double")?);
        Ok(f64::from_le_bytes(le))
    }

    /// A length-prefixed byte string (Avro bytes and string).
    pub(crate) fn read_bytes(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        let len = self.read_long()?;
        let len = usize::try_from(len)
            .map_err(|_| format!("the length at byte {start} is negative ({len})"))?;
        self.take(len, "a string or bytes")
    }
}

/// Appends a zig-zag varint long.
#[inline]
pub(crate) fn write_long(value: i64, out: &mut Vec<u8>) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Appends a length-prefixed byte string.
pub(crate) fn write_bytes(value: &[u8], out: &mut Vec<u8>) {
    write_long(value.len() as i64, out);
    out.extend_from_slice(value);
}
