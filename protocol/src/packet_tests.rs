//! Codec tests on raw bytes, including the seed document's worked examples byte for byte.

use super::*;

const ID: &MsgId = b"550e8400e29b41d4a716446655440000";

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn seed_connect_example() {
    // |0x01|0x00|0x04|"test"|0x00|0x06|"123456"|0x01
    let wire = concat(&[
        &[0x01, 0x00, 0x04],
        b"test",
        &[0x00, 0x06],
        b"123456",
        &[0x01],
    ]);
    let p = ClientPacket::Connect {
        username: b"test",
        password: b"123456",
        role: Some(1),
        flags: None,
    };
    assert_eq!(p.to_vec(), wire);
    assert_eq!(p.encoded_len(), wire.len());
    assert_eq!(ClientPacket::decode(&wire).unwrap(), p);
}

#[test]
fn connect_without_role_and_with_flags() {
    let wire = concat(&[&[0x01, 0x00, 0x01], b"7", &[0x00, 0x00]]);
    assert_eq!(
        ClientPacket::decode(&wire).unwrap(),
        ClientPacket::Connect {
            username: b"7",
            password: b"",
            role: None,
            flags: None
        }
    );
    let mut with_flags = wire.clone();
    with_flags.extend_from_slice(&[2, FLAG_EXTENSIONS]);
    let p = ClientPacket::decode(&with_flags).unwrap();
    assert_eq!(
        p,
        ClientPacket::Connect {
            username: b"7",
            password: b"",
            role: Some(2),
            flags: Some(1)
        }
    );
    assert_eq!(p.to_vec(), with_flags);
    let mut too_long = with_flags;
    too_long.push(0);
    assert_eq!(
        ClientPacket::decode(&too_long),
        Err(DecodeError::TrailingBytes { cmd: 1, extra: 1 })
    );
}

#[test]
fn seed_publish_example() {
    // |0x03|0x00|0x00|0x04|0xd2|MsgId|0x00|0x0b|"hello world"
    let wire = concat(&[
        &[0x03, 0x00, 0x00, 0x04, 0xd2],
        ID,
        &[0x00, 0x0b],
        b"hello world",
    ]);
    let p = ClientPacket::Publish {
        to: 1234,
        msg_id: ID,
        payload: b"hello world",
    };
    assert_eq!(p.to_vec(), wire);
    assert_eq!(ClientPacket::decode(&wire).unwrap(), p);
    // The response: |0x04|MsgId
    let ack = ServerPacket::PubAck { msg_id: ID }.to_vec();
    assert_eq!(ack, concat(&[&[0x04], ID]));
}

#[test]
fn seed_group_publish_example() {
    let wire = concat(&[
        &[0x05, 0x00, 0x00, 0x04, 0xd2],
        ID,
        &[0x00, 0x0b],
        b"hello world",
    ]);
    let p = ClientPacket::GroupPublish {
        group: 1234,
        msg_id: ID,
        payload: b"hello world",
    };
    assert_eq!(p.to_vec(), wire);
    assert_eq!(ClientPacket::decode(&wire).unwrap(), p);
    assert_eq!(
        ServerPacket::GroupPubAck { msg_id: ID }.to_vec(),
        concat(&[&[0x06], ID])
    );
}

#[test]
fn seed_group_part_publish_example() {
    // ToUserNum is 16 bits (the contract; the seed's example drew one byte).
    let wire = concat(&[
        &[0x0b, 0x00, 0x00, 0x04, 0xd2],
        ID,
        &[0x00, 0x02],
        &[0x00, 0x00, 0x04, 0xd2],
        &[0x00, 0x00, 0x04, 0xd3],
        &[0x00, 0x0b],
        b"hello world",
    ]);
    let p = ClientPacket::decode(&wire).unwrap();
    let ClientPacket::GroupPartPublish {
        group,
        msg_id,
        targets,
        payload,
    } = p.clone()
    else {
        panic!("wrong variant {p:?}");
    };
    assert_eq!(group, 1234);
    assert_eq!(msg_id, ID);
    assert_eq!(targets.iter().collect::<Vec<_>>(), vec![1234, 1235]);
    assert_eq!(payload, b"hello world");
    assert_eq!(p.to_vec(), wire);
    assert_eq!(
        ServerPacket::GroupPartPubAck { msg_id: ID }.to_vec(),
        concat(&[&[0x0c], ID])
    );
}

#[test]
fn server_push_layouts() {
    let push = ServerPacket::Push {
        msg_id: ID,
        payload: b"hi",
    };
    let wire = concat(&[&[0x03], ID, &[0x00, 0x02], b"hi"]);
    assert_eq!(push.to_vec(), wire);
    assert_eq!(ServerPacket::decode(&wire).unwrap(), push);
    assert_eq!(push_msg_id(&wire), Some(ID));

    let gp = ServerPacket::GroupPush {
        group: 9,
        msg_id: ID,
        payload: b"x",
    };
    let w = gp.to_vec();
    assert_eq!(push_msg_id(&w), Some(ID));
    assert_eq!(ServerPacket::decode(&w).unwrap(), gp);
    assert_eq!(cmd::ack_for_push(w[0]), Some(cmd::GROUP_PUB_ACK));
}

#[test]
fn single_byte_packets_round_trip() {
    for (p, b) in [
        (ServerPacket::Ping, 7u8),
        (ServerPacket::PingResp, 8),
        (ServerPacket::Disconnect, 9),
        (ServerPacket::InvalidPacket, 10),
        (ServerPacket::Logout, 20),
    ] {
        assert_eq!(p.to_vec(), vec![b]);
        assert_eq!(ServerPacket::decode(&[b]).unwrap(), p);
    }
    assert_eq!(
        ServerPacket::ConnectAck { code: 3 }.to_vec(),
        vec![0x02, 0x03]
    );
    assert_eq!(ClientPacket::decode(&[8]).unwrap(), ClientPacket::PingResp);
    assert_eq!(
        ClientPacket::decode(&[9]).unwrap(),
        ClientPacket::Disconnect
    );
}

#[test]
fn pub_err_layout() {
    let p = ServerPacket::PubErr {
        msg_id: ID,
        code: 1203,
    };
    let w = p.to_vec();
    assert_eq!(w.len(), 37);
    assert_eq!(&w[33..], &1203u32.to_be_bytes());
    assert_eq!(ServerPacket::decode(&w).unwrap(), p);
}

#[test]
fn truncated_packets_are_incomplete() {
    let full = ClientPacket::Publish {
        to: 1,
        msg_id: ID,
        payload: b"hello",
    }
    .to_vec();
    for cut in 1..full.len() {
        match ClientPacket::decode(&full[..cut]) {
            Err(DecodeError::Incomplete { needed }) => assert!(needed > 0),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn invalid_packets() {
    assert_eq!(ClientPacket::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        ClientPacket::decode(&[2, 0]),
        Err(DecodeError::UnknownCommand(2))
    );
    assert_eq!(
        ClientPacket::decode(&[99]),
        Err(DecodeError::UnknownCommand(99))
    );
    assert_eq!(
        ClientPacket::decode(&[7, 0]),
        Err(DecodeError::TrailingBytes { cmd: 7, extra: 1 })
    );
    // A target count larger than the packet.
    let mut w = vec![0x0b, 0, 0, 0, 1];
    w.extend_from_slice(ID);
    w.extend_from_slice(&[0xff, 0xff]);
    assert!(matches!(
        ClientPacket::decode(&w),
        Err(DecodeError::Incomplete { .. })
    ));
}
