// name: schema_lesion_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Lesion(lesionId).
CREATE CONSTRAINT lesion_lesionId IF NOT EXISTS FOR (n:Lesion) REQUIRE n.lesionId IS UNIQUE
