use super::net::Layout;
use crate::model::MlpConfig;

#[test]
fn device_layout_round_trips_and_aligns_every_block() {
    let config = MlpConfig::new(3, 2).with_hidden([5]);
    let layout = Layout::new(&config);
    assert_eq!(layout.num_params, 3 * 5 + 5 + 5 * 2 + 2);
    for l in &layout.layers {
        assert_eq!(l.w % 128, 0);
        assert_eq!(l.b % 128, 0);
    }
    let flat: Vec<f32> = (0..layout.num_params).map(|i| i as f32).collect();
    let device = layout.to_device(&flat);
    assert_eq!(device.len(), layout.device_len);
    // Layer 0's weight [3, 5] row-major becomes [5, 3]: element (i=1, o=2) is flat 1*5+2 = 7,
    // on the device at o*3+i = 7 -> also 7 by coincidence, so check (i=2, o=0): flat 10, device 2.
    assert_eq!(device[layout.layers[0].w + 2], 10.0);
    assert_eq!(device[layout.layers[0].w + 3], 1.0); // (i=0, o=1): flat 1
    // Biases are copied as they are.
    assert_eq!(device[layout.layers[0].b], 15.0);
    assert_eq!(layout.to_flat(&device), flat);
}
