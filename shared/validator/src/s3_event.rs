//! S3 event notifications as AWS writes them, for `modelctl dev`'s endpoint and the tests: one
//! ObjectCreated record, the key URL-encoded (`+` for a space).

use serde_json::{Value, json};

use modelpipe_core::model_name::encode_event_key;

/// One object just created (what `modelctl dev`'s endpoint notices after a write).
#[derive(Debug, Clone)]
pub struct CreatedObject {
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, `ObjectCreated:Copy`.
    pub event_name: &'static str,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub sequencer: String,
}

/// The event's JSON, field for field as in AWS's documented sample (event version 2.1).
pub fn object_created_event(object: &CreatedObject) -> Value {
    let CreatedObject {
        event_name,
        bucket,
        key,
        size,
        etag,
        sequencer,
    } = object;
    json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "eventName": event_name,
            "userIdentity": {"principalId": "AWS:modelpipe"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "modelpipe"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "modelpipe-uploads",
                "bucket": {"name": bucket, "ownerIdentity": {"principalId": "modelpipe"}, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {"key": encode_event_key(key), "size": size, "eTag": etag, "sequencer": sequencer}
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample AWS documents, as shipped in aws_lambda_events' fixtures.
    const AWS_SAMPLE: &str = r#"{"Records":[{"eventVersion":"2.0","eventSource":"aws:s3","awsRegion":"us-east-1",
      "eventTime":"1970-01-01T00:00:00.123Z","eventName":"ObjectCreated:Put",
      "userIdentity":{"principalId":"EXAMPLE"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},
      "responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
      "s3":{"s3SchemaVersion":"1.0","configurationId":"testConfigRule",
        "bucket":{"name":"sourcebucket","ownerIdentity":{"principalId":"EXAMPLE"},"arn":"arn:aws:s3:::mybucket"},
        "object":{"key":"Happy%20Face.jpg","size":1024,"urlDecodedKey":"Happy Face.jpg","versionId":"version","eTag":"d41d8cd98f00b204e9800998ecf8427e","sequencer":"Happy Sequencer"}}}]}"#;

    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
            _ => Value::Null,
        }
    }

    #[test]
    fn the_event_has_the_shape_of_aws_sample_and_parses_as_an_s3_event() {
        let ours = object_created_event(&CreatedObject {
            event_name: "ObjectCreated:Put",
            bucket: "models".into(),
            key: "models/iris/my model+1.onnx".into(),
            size: 10,
            etag: "abc".into(),
            sequencer: "0055AED6DCD90281E5".into(),
        });
        let mut sample: Value = serde_json::from_str(AWS_SAMPLE).unwrap();
        // Fields S3 leaves out for unversioned buckets and that only some SDKs add.
        let object = sample["Records"][0]["s3"]["object"]
            .as_object_mut()
            .unwrap();
        object.remove("versionId");
        object.remove("urlDecodedKey");
        assert_eq!(shape(&ours), shape(&sample));
        assert_eq!(
            ours["Records"][0]["s3"]["object"]["key"],
            "models/iris/my+model%2B1.onnx"
        );
        let parsed: aws_lambda_events::s3::S3Event = serde_json::from_value(ours).unwrap();
        assert_eq!(parsed.records[0].s3.object.size, Some(10));
    }
}
