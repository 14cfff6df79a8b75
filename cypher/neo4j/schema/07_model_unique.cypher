// name: schema_model_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Model(modelId).
CREATE CONSTRAINT model_modelId IF NOT EXISTS FOR (n:Model) REQUIRE n.modelId IS UNIQUE
